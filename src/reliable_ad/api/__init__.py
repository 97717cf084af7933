"""The one door into ReliableAD: every `rad` command, every DVC stage (through `rad`) and every Prefect task calls
one function here and nothing else of the package, so no logic lives where only one of them can reach it.

Each function takes the typed params (`reliable_ad.params.Params`; `params.paths` names where the pipeline's
artefacts live) and the paths it works on, and returns a JSON-able summary. Heavy libraries are imported inside
the functions, so importing the API (and `rad --help`) stays fast.

- data: `synth`, `import_dataset`, `validate`, `prepare`; feedback: `init_feedback`, `ingest_feedback`,
  `record_data_version`, `simulate_feedback`, `announce_feedback`
- the judge: `train_rfnet`, `evaluate_rfnet`, `calibrate_rfnet`, `ablate_rfnet`, `register_rfnet`
- generation: `generate`, `recurrent`, `evaluate_generation`, `generation_shard`, `merge_generation_shards`,
  `pretrain_generator`, `export_generator`
- RFFT: `rfft_train`, `compare_generators`, `register_controlnet`
- feedback rounds: `feedback_rounds`, `feedback_round`, `round_of_batch`, `round_finished`, ...
- registry and report: `list_models`, `promote`, `rollback`, `champion_folder`, `report`
- settings: `settings` (every value in effect)
"""

from reliable_ad.api.common import settings
from reliable_ad.api.data import (
    FEEDBACK_EVENT,
    announce_feedback,
    import_dataset,
    ingest_feedback,
    init_feedback,
    prepare,
    record_data_version,
    simulate_feedback,
    synth,
    validate,
)
from reliable_ad.api.generation import (
    evaluate_generation,
    export_generator,
    generate,
    generation_shard,
    merge_generation_shards,
    pretrain_generator,
    recurrent,
)
from reliable_ad.api.registry import champion_folder, list_models, promote, report, rollback
from reliable_ad.api.rfft import compare_generators, register_controlnet, rfft_train
from reliable_ad.api.rfnet import ablate_rfnet, calibrate_rfnet, evaluate_rfnet, register_rfnet, train_rfnet
from reliable_ad.api.rounds import (
    RoundData,
    RoundError,
    feedback_round,
    feedback_rounds,
    first_attempt_rates,
    round_controlnet,
    round_finished,
    round_judge,
    round_of_batch,
)

__all__ = [
    "FEEDBACK_EVENT",
    "RoundData",
    "RoundError",
    "ablate_rfnet",
    "announce_feedback",
    "calibrate_rfnet",
    "champion_folder",
    "compare_generators",
    "evaluate_generation",
    "evaluate_rfnet",
    "export_generator",
    "feedback_round",
    "feedback_rounds",
    "first_attempt_rates",
    "generate",
    "generation_shard",
    "import_dataset",
    "ingest_feedback",
    "init_feedback",
    "list_models",
    "merge_generation_shards",
    "prepare",
    "pretrain_generator",
    "promote",
    "record_data_version",
    "recurrent",
    "register_controlnet",
    "register_rfnet",
    "report",
    "rfft_train",
    "rollback",
    "round_controlnet",
    "round_finished",
    "round_judge",
    "round_of_batch",
    "settings",
    "simulate_feedback",
    "synth",
    "train_rfnet",
    "validate",
]
