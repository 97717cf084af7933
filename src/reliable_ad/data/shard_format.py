"""What a shard folder holds, shared by its writer (`shards`) and its reader (`dataset`): neither imports the other."""

SCHEMA_VERSION = 2  # 2: the source column
INDEX_FILE = "index.json"
SOURCE_COLUMN = "source"  # the dataset folder a row came from (e.g. rf1m-synth, feedback, rf1m-gen)
BLOB_COLUMNS = ("image", "product", "depth", "saliency")
TARGET_MODE = {"image": "RGB", "product": "RGBA", "depth": "L", "saliency": "L"}
