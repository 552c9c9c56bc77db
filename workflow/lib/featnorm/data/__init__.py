"""Data: raw data -> shards -> packed batches (SPEC section 2).

Modules: `resize` (random-resize rule, decoding), `patchify`, `windows` (context/target
split), `packing` (rows of fixed context + target segments), `packing_first_fit` (the
default placement) and `packing_best_fit`, `shards` (WebDataset reading/writing,
manifests), `train_pipeline` (TrainLoader: packed training batches with resumable state),
`eval_pipeline` (centre-crop batches for probes, depth), `imagefolder` / `nyu` (packers),
`download` / `hf_plan` (fetching the author's shards), `demo_classification` /
`demo_depth` (generated data).
Imports only `featnorm.tokens`, `featnorm.batch` and `featnorm.config`.
"""

from .eval_pipeline import EvalBatch, depth_batches, eval_batches
from .packing import Pack, PackItem, RowPacker, packing_efficiency, packs_to_batch, segment_lengths
from .packing_best_fit import BestFitPacker
from .packing_first_fit import FirstFitPacker
from .shards import BadInputLog, ShardError, resolve_shards
from .train_pipeline import PipelineSpec, TrainLoader, num_images

__all__ = [
    "BadInputLog",
    "BestFitPacker",
    "EvalBatch",
    "FirstFitPacker",
    "Pack",
    "PackItem",
    "PipelineSpec",
    "RowPacker",
    "ShardError",
    "TrainLoader",
    "depth_batches",
    "eval_batches",
    "num_images",
    "packing_efficiency",
    "packs_to_batch",
    "resolve_shards",
    "segment_lengths",
]
