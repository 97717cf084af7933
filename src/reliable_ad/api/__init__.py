"""The one door into ReliableAD: every `rad` command, every DVC stage (through `rad`) and every Prefect task calls
one function here and nothing else of the package, so no logic lives where only one of them can reach it.

Each function takes the typed params (`reliable_ad.params.Params`; `params.paths` names where the pipeline's
artefacts live) and the paths it works on, and returns a JSON-able summary. Heavy libraries are imported inside
the functions, so importing the API (and `rad --help`) stays fast.

- data: `synth`, `import_dataset`, `validate`, `prepare`
- human feedback: `init_feedback`, `ingest_feedback`, `record_data_version`, `simulate_feedback`,
  `announce_feedback`, `prefect_server`; review in Label Studio: `review_push`, `review_annotate`, `review_pull`
- the judge: `train_rfnet`, `evaluate_rfnet`, `calibrate_rfnet`, `ablate_rfnet`, `register_rfnet`
- generation: `generate`, `recurrent`, `evaluate_generation`, `generation_shard`, `merge_generation_shards`,
  `pretrain_generator`, `export_generator`
- RFFT: `rfft_train`, `compare_generators`, `register_controlnet`
- learning from people's labels directly (prompt selection, SFT, KTO, DPO): `label_batch`, `compare_methods`
- feedback rounds: `feedback_rounds`, `feedback_round`, `round_of_batch`, `round_finished`, ...; the
  regulariser ablation with its rounds: `regularizer_ablation`
- registry and report: `list_models`, `promote`, `rollback`, `champion_folder`, `report`
- settings: `settings` (every value in effect)
"""

from reliable_ad.api.common import judge_version, settings
from reliable_ad.api.data import import_dataset, prepare, synth, validate
from reliable_ad.api.feedback import (
    FEEDBACK_EVENT,
    announce_feedback,
    ingest_feedback,
    init_feedback,
    prefect_server,
    record_data_version,
    review_annotate,
    review_pull,
    review_push,
    review_simulated,
    simulate_feedback,
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
from reliable_ad.api.methods import compare_methods, label_batch
from reliable_ad.api.registry import champion_folder, list_models, promote, report, rollback
from reliable_ad.api.rfft import compare_generators, register_controlnet, rfft_train
from reliable_ad.api.rfnet import ablate_rfnet, calibrate_rfnet, evaluate_rfnet, register_rfnet, train_rfnet
from reliable_ad.api.rounds import (
    RoundData,
    RoundError,
    ablation_markdown,
    feedback_round,
    feedback_rounds,
    first_attempt_rates,
    regularizer_ablation,
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
    "ablation_markdown",
    "announce_feedback",
    "calibrate_rfnet",
    "champion_folder",
    "compare_generators",
    "compare_methods",
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
    "judge_version",
    "label_batch",
    "list_models",
    "merge_generation_shards",
    "prefect_server",
    "prepare",
    "pretrain_generator",
    "promote",
    "record_data_version",
    "recurrent",
    "register_controlnet",
    "register_rfnet",
    "regularizer_ablation",
    "report",
    "review_annotate",
    "review_pull",
    "review_push",
    "review_simulated",
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
