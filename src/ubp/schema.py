"""Names used everywhere: event types, columns, tasks and the project's directory layout."""
from pathlib import Path

# --- raw / canonical event files -------------------------------------------------------------
PRODUCT_BUY = "product_buy"
ADD_TO_CART = "add_to_cart"
REMOVE_FROM_CART = "remove_from_cart"
PAGE_VISIT = "page_visit"
SEARCH_QUERY = "search_query"
EVENT_TYPES = (PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART, PAGE_VISIT, SEARCH_QUERY)
PRODUCT_EVENTS = (PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART)
PROPERTIES = "product_properties"

CLIENT_ID = "client_id"
TIMESTAMP = "timestamp"
SKU = "sku"
URL = "url"
QUERY = "query"
CATEGORY = "category"
PRICE = "price"
NAME = "name"

# The column that carries each event's payload.
EVENT_VALUE_COLUMN = {
    PRODUCT_BUY: SKU,
    ADD_TO_CART: SKU,
    REMOVE_FROM_CART: SKU,
    PAGE_VISIT: URL,
    SEARCH_QUERY: QUERY,
}
PROPERTY_COLUMNS = (SKU, CATEGORY, PRICE, NAME)
VECTOR_COLUMNS = (QUERY, NAME)  # quantized text embeddings
VECTOR_DIM = 16
N_PRICE_BUCKETS = 100
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

RELEVANT_CLIENTS_FILE = "input/relevant_clients.npy"

# --- tasks --------------------------------------------------------------------------------------
CHURN = "churn"
PROPENSITY_CATEGORY = "propensity_category"
PROPENSITY_SKU = "propensity_sku"
CONVERSION = "conversion"
PROPENSITY_NEW_SKU = "propensity_new_sku"
PROPENSITY_PRICE = "propensity_price"
TASKS = (CHURN, PROPENSITY_CATEGORY, PROPENSITY_SKU, CONVERSION, PROPENSITY_NEW_SKU, PROPENSITY_PRICE)
BINARY_TASKS = (CHURN, CONVERSION)
# Propensity task -> the purchase column its labels are values of.
PROPENSITY_COLUMN = {
    PROPENSITY_CATEGORY: CATEGORY,
    PROPENSITY_SKU: SKU,
    PROPENSITY_NEW_SKU: SKU,
    PROPENSITY_PRICE: PRICE,
}
PROPENSITY_TASKS = tuple(PROPENSITY_COLUMN)
OPEN_TASKS = (CHURN, PROPENSITY_CATEGORY, PROPENSITY_SKU)
OFFICIAL_TASK_NAMES = {CONVERSION: "hidden1", PROPENSITY_NEW_SKU: "hidden2", PROPENSITY_PRICE: "hidden3"}
N_TARGET_LABELS = 100


def label_file(task: str) -> str:
    """File name of a propensity task's label ids in a `target/` directory (as the challenge ships it)."""
    return f"{task}.npy"


def popularity_file(task: str) -> str:
    return f"popularity_{task}.npy"


ACTIVE_CLIENTS_FILE = "active_clients.npy"

# --- the project's directories (relative to the repository root) -----------------------------
DATA = Path("data")
SYNTHETIC_DIR = DATA / "synthetic"  # raw layout written by the generator, plus oracle/
CANONICAL_DIR = DATA / "canonical"  # validated, typed copy of the raw layout
SPLIT_DIR = DATA / "split"  # input/<event>.parquet, train_target.parquet, validation_target.parquet
TARGETS_DIR = DATA / "targets"  # label sets, popularity, active clients, labels/<task>.npz
FEATURES_DIR = DATA / "features"  # features.parquet: one row of handcrafted features per relevant client
SEQUENCES_DIR = DATA / "sequences"  # tokens.npy, lengths.npy, client_ids.npy, vocab.json (see ubp.sequences)
EMBEDDINGS_DIR = Path("embeddings")  # <profile>/client_ids.npy + embeddings.npy
COMBINED_DIR = Path("combined")  # the same, for profiles built from other profiles (ensembles, stacking)
METRICS_DIR = Path("metrics")  # <profile>.json
REPORTS_DIR = Path("reports")
BENCH_DIR = REPORTS_DIR / "bench"  # what benchmarks/ scripts write, by hand

ORACLE_SUBDIR = "oracle"  # inside the synthetic dir: client_ids.npy + state.npy + columns.json
SPLIT_FILE = "split.json"
LABELS_SUBDIR = "labels"  # inside TARGETS_DIR: <task>.npz per task
MAX_EMBEDDING_DIM = 2048  # SPEC §7: the widest profile a submission may have
TARGET_OFFSET_DAYS = 27  # SPEC §3: train_target_start = end_date - 27 days, truncated to midnight
TRAIN_TARGET = "train_target"
VALIDATION_TARGET = "validation_target"
