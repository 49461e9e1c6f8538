-- MedQ catalog, schema version 1.
-- Every table is keyed by stable ids so that writing a record twice updates it (idempotent upserts).
-- JSON payloads are stored as VARCHAR holding JSON text (no DuckDB extension needed).

CREATE TABLE images (
    image_id      VARCHAR PRIMARY KEY,   -- sha256 of the normalized pixels (or of the manifest row)
    object_key    VARCHAR,               -- key of the normalized PNG in the object store (NULL: rendered on demand)
    thumb_key     VARCHAR,
    source_uri    VARCHAR,               -- where it came from (de-identified path or manifest reference)
    source_format VARCHAR,               -- dicom | nifti | png | jpeg | tiff | manifest | tsv
    modality      VARCHAR,
    width         INTEGER,
    height        INTEGER,
    channels      INTEGER,
    manifest_row  BIGINT,                -- row of the pool manifest when rendered on demand
    metadata      VARCHAR,               -- JSON: de-identified header fields, provenance
    created_at    TIMESTAMP DEFAULT current_timestamp
);

-- An item is something the loop uses: an eval question, a labelled training image, a pool image.
CREATE TABLE items (
    item_id        VARCHAR PRIMARY KEY,
    split          VARCHAR NOT NULL,     -- eval | train | pool
    kind           VARCHAR NOT NULL,     -- mcq | description | paired | image
    image_id       VARCHAR NOT NULL,
    image_b_id     VARCHAR,              -- second image of a paired item
    question       VARCHAR,
    options        VARCHAR,              -- JSON {"A": "...", ...}
    answer         VARCHAR,              -- gold letter (mcq) or A/B (paired)
    question_type  VARCHAR,              -- Yes-or-No | What | How
    modality       VARCHAR,
    verdict        VARCHAR,              -- good | usable | reject (labelled items)
    degradations   VARCHAR,              -- JSON [{"type":..., "level": 1|2}]
    level          INTEGER,              -- worst degradation level 0/1/2
    description    VARCHAR,
    source         VARCHAR,              -- world | medqbench | ingest | annotation:<round> | ...
    round_added    VARCHAR,
    source_index   VARCHAR,              -- index column of an imported TSV (round trips)
    created_at     TIMESTAMP DEFAULT current_timestamp
);
CREATE INDEX items_split ON items(split);
CREATE INDEX items_image ON items(image_id);

-- Ground truth of pool images, read only by simulated annotators and benchmarks.
CREATE TABLE oracle_labels (
    image_id     VARCHAR PRIMARY KEY,
    modality     VARCHAR,
    verdict      VARCHAR,
    degradations VARCHAR,
    description  VARCHAR
);

CREATE TABLE model_versions (
    version      VARCHAR PRIMARY KEY,
    backend      VARCHAR NOT NULL,
    parent       VARCHAR,
    dataset_id   VARCHAR,
    artifact_key VARCHAR,                -- object-store prefix holding the saved model
    metrics      VARCHAR,                -- JSON
    promoted     BOOLEAN DEFAULT FALSE,
    reason       VARCHAR,
    created_at   TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE rounds (
    round_id      VARCHAR PRIMARY KEY,
    round_index   INTEGER NOT NULL,
    status        VARCHAR NOT NULL,      -- running | done | failed | stopped
    config        VARCHAR,               -- JSON of the flow parameters and settings used
    model_in      VARCHAR,
    model_out     VARCHAR,
    promoted      BOOLEAN,
    spend         DOUBLE,
    stop_reason   VARCHAR,
    report        VARCHAR,               -- JSON summary / curation report
    started_at    TIMESTAMP DEFAULT current_timestamp,
    finished_at   TIMESTAMP
);

-- Checkpoints: one row per finished step of a round, so a re-run skips what is done.
CREATE TABLE round_steps (
    round_id    VARCHAR NOT NULL,
    step        VARCHAR NOT NULL,
    status      VARCHAR NOT NULL,
    info        VARCHAR,
    finished_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (round_id, step)
);

CREATE TABLE eval_runs (
    eval_id       VARCHAR PRIMARY KEY,
    model_version VARCHAR NOT NULL,
    round_id      VARCHAR,
    split         VARCHAR NOT NULL,
    judge         VARCHAR,
    metrics       VARCHAR,               -- JSON: accuracy overall / per modality / per type / per level, ECE, description scores
    created_at    TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE predictions (
    eval_id     VARCHAR NOT NULL,
    item_id     VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL,        -- mcq | description | paired
    probs       VARCHAR,                 -- JSON {"A": p, ...}
    predicted   VARCHAR,                 -- extracted letter / verdict
    correct     BOOLEAN,
    entropy     DOUBLE,                  -- normalized predictive entropy in [0, 1]
    response    VARCHAR,
    scores      VARCHAR,                 -- JSON description scores (completeness, ...)
    score       DOUBLE,                  -- 1/0 for mcq, overall 0-8 for descriptions
    PRIMARY KEY (eval_id, item_id)
);

CREATE TABLE failures (
    round_id  VARCHAR NOT NULL,
    item_id   VARCHAR NOT NULL,
    kind      VARCHAR NOT NULL,          -- wrong_mcq | low_description
    severity  DOUBLE,                    -- error mass contribution (higher = worse)
    prototype_id VARCHAR,                -- NULL for HDBSCAN noise
    PRIMARY KEY (round_id, item_id)
);

CREATE TABLE prototypes (
    prototype_id      VARCHAR PRIMARY KEY,
    round_id          VARCHAR NOT NULL,
    medoid_item_id    VARCHAR,
    medoid_image_id   VARCHAR,
    centroid          VARCHAR,           -- JSON list of floats (embedding space)
    members           VARCHAR,           -- JSON list of item ids
    n_members         INTEGER,
    error_mass        DOUBLE,
    radius            DOUBLE,
    modality          VARCHAR,
    degradation       VARCHAR,
    question_type     VARCHAR,
    summary           VARCHAR,
    is_noise          BOOLEAN DEFAULT FALSE
);

CREATE TABLE index_versions (
    index_id        VARCHAR PRIMARY KEY,
    embedder        VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,
    n_vectors       BIGINT,
    dim             INTEGER,
    object_key      VARCHAR,
    recall          DOUBLE,
    created_at      TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE candidates (
    round_id      VARCHAR NOT NULL,
    image_id      VARCHAR NOT NULL,
    prototype_id  VARCHAR,
    anchor        INTEGER,
    distance      DOUBLE,
    rank          INTEGER,
    probs         VARCHAR,
    entropy       DOUBLE,
    predicted     VARCHAR,
    PRIMARY KEY (round_id, image_id)
);

CREATE TABLE routes (
    round_id     VARCHAR NOT NULL,
    image_id     VARCHAR NOT NULL,
    lane         VARCHAR NOT NULL,       -- expert | verify | auto
    entropy      DOUBLE,
    cost         DOUBLE,
    spot_check   BOOLEAN DEFAULT FALSE,
    reason       VARCHAR,
    PRIMARY KEY (round_id, image_id)
);

CREATE TABLE annotation_tasks (
    task_id      VARCHAR PRIMARY KEY,    -- medq id: round + image + lane
    round_id     VARCHAR NOT NULL,
    image_id     VARCHAR NOT NULL,
    lane         VARCHAR NOT NULL,
    backend      VARCHAR NOT NULL,
    external_id  VARCHAR,                -- Label Studio task id
    status       VARCHAR NOT NULL,       -- queued | sent | done | deleted | failed
    uncertainty  DOUBLE,
    prediction   VARCHAR,                -- JSON pre-annotation
    created_at   TIMESTAMP DEFAULT current_timestamp,
    updated_at   TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE annotations (
    annotation_id VARCHAR PRIMARY KEY,   -- backend-stable id (e.g. ls:<annotation id>)
    task_id       VARCHAR NOT NULL,
    round_id      VARCHAR NOT NULL,
    image_id      VARCHAR NOT NULL,
    annotator     VARCHAR,
    lane          VARCHAR,
    verdict       VARCHAR,
    degradations  VARCHAR,
    description   VARCHAR,
    modality      VARCHAR,
    accepted_prediction BOOLEAN,
    version       INTEGER DEFAULT 1,
    external_updated_at VARCHAR,
    raw           VARCHAR,
    created_at    TIMESTAMP DEFAULT current_timestamp,
    updated_at    TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE annotation_history (
    annotation_id VARCHAR NOT NULL,
    version       INTEGER NOT NULL,
    payload       VARCHAR,
    recorded_at   TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (annotation_id, version)
);

CREATE TABLE datasets (
    dataset_id    VARCHAR PRIMARY KEY,
    round_id      VARCHAR,
    parent        VARCHAR,
    n_items       INTEGER,
    status        VARCHAR,               -- passed | failed
    report        VARCHAR,               -- JSON Great Expectations summary
    created_at    TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE dataset_items (
    dataset_id   VARCHAR NOT NULL,
    item_id      VARCHAR NOT NULL,
    image_id     VARCHAR NOT NULL,
    label_source VARCHAR,                -- seed | expert | verify | auto
    PRIMARY KEY (dataset_id, item_id)
);

CREATE TABLE quarantine (
    quarantine_id VARCHAR PRIMARY KEY,   -- stable: stage + reference
    stage         VARCHAR NOT NULL,      -- ingest | annotation | curation | ...
    ref           VARCHAR NOT NULL,      -- file path, task id, item id
    reason        VARCHAR NOT NULL,
    round_id      VARCHAR,
    payload       VARCHAR,
    created_at    TIMESTAMP DEFAULT current_timestamp
);
