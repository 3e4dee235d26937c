"""The run store's tables: plain SQLite, readable with ``sqlite3``; bump the version when they change."""

from __future__ import annotations

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stages (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    arm TEXT,
    iteration INTEGER,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')),
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    outputs TEXT,
    calls INTEGER NOT NULL DEFAULT 0,  -- model results its attempts committed (all attempts)
    spent REAL NOT NULL DEFAULT 0  -- seconds its attempts spent, each up to its last commit
);
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY,
    uid TEXT UNIQUE NOT NULL,
    text TEXT NOT NULL,
    text_sha TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('seed', 'evolved')),
    source TEXT,
    category TEXT,
    parent_id INTEGER REFERENCES prompts(id),
    root_id INTEGER REFERENCES prompts(id),
    iteration INTEGER NOT NULL DEFAULT 0,
    operator TEXT,
    mutation TEXT,
    depth INTEGER NOT NULL DEFAULT 0,
    creator_model TEXT,
    template_hash TEXT,
    seed INTEGER,
    stage_key TEXT,
    raw TEXT
);
CREATE INDEX IF NOT EXISTS prompts_parent ON prompts(parent_id);
CREATE INDEX IF NOT EXISTS prompts_stage ON prompts(stage_key);
CREATE TABLE IF NOT EXISTS prompt_events (
    stage_key TEXT NOT NULL,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    kind TEXT NOT NULL,
    value REAL,
    detail TEXT,
    PRIMARY KEY (stage_key, prompt_id, kind)
);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    prompt_sha TEXT NOT NULL,
    params_sha TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    finish_reason TEXT,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS rewards (
    key TEXT PRIMARY KEY,
    reward_id TEXT NOT NULL,
    prompt_sha TEXT NOT NULL,
    response_sha TEXT NOT NULL,
    score REAL,
    detail TEXT,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS pairs (
    stage_key TEXT NOT NULL,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    source TEXT NOT NULL,
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    chosen_score REAL,
    rejected_score REAL,
    chosen_win_prob REAL,  -- SPPO: the response's estimated win probability against the prompt's other samples
    rejected_win_prob REAL,
    PRIMARY KEY (stage_key, prompt_id)
);
CREATE TABLE IF NOT EXISTS rollouts (  -- online eva: the completions a phase's policy sampled, and their rewards
    stage_key TEXT NOT NULL,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    step INTEGER NOT NULL,
    sample_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    reward REAL,
    PRIMARY KEY (stage_key, prompt_id, step, sample_index)
);
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY,
    judge_id TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    question_sha TEXT NOT NULL,
    answer_a_sha TEXT NOT NULL,
    answer_b_sha TEXT,
    verdict TEXT,
    prob_a REAL,
    score REAL,
    raw TEXT,
    attempts INTEGER,
    parse_failed INTEGER NOT NULL DEFAULT 0,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    stage_key TEXT NOT NULL,
    arm TEXT,
    name TEXT NOT NULL,
    value REAL,
    ci_low REAL,
    ci_high REAL,
    n INTEGER,
    detail TEXT,
    PRIMARY KEY (stage_key, name)
);
"""
