"""Evaluation of a pretrained checkpoint (SPEC section 4). Never imports `featnorm.train`.

| module | what is in it |
| --- | --- |
| `checkpoint_loading.py` | `load_encoder(model.pt)`: the teacher Encoder rebuilt from the saved config, eval mode; `CheckpointError` (one line naming the file and why) |
| `eval_data.py` | adapters over `featnorm.data.eval_pipeline`: batches tagged by image shard, depth batches |
| `features.py` | mean-pooled features of every depth (or the last only), float16 shards per image shard, resumable; `load_features`, `feature_depth_indices` |
| `linear_probe.py` | `MultiDepthLinear` + `train_linear_probes`: one classifier per depth, trained together |
| `knn_probe.py` | `knn_probe`: weighted k-NN (cosine, k = 20, exp(sim / 0.07) votes, as DINO) per depth, chunked |
| `depth_losses.py` | per-image median/MAD normalisation of the ground truth, smooth-L1 + gradient matching, RMSE/AbsRel/delta of the prediction mapped back to metres |
| `depth_probe.py` | `DepthHead` on the 4th-from-last block, `train_depth_probe`, `save_depth_strips` |
| `lidar.py` | the fixed seeded LiDAR view set, view embeddings, `lidar_and_rankme` |

JSON written by the scripts (`runs/<run>/eval/`):
- `linear_probe.json`: `depths` (the encoder depth of each entry: 0 = embedding output,
  d = output of block d), `top1`, `top5` (lists over those depths, percent), `best_depth`, `best_top1`, `best_top5`, `last_depth`, `last_top1`,
  `last_top5`, `loss_curve` {`epoch`, `train_loss_mean`, `train_loss_per_depth`}, `num_train`,
  `num_val`, `num_classes`, `feature_dim`, `epochs`, `batch_size`, `lr`, `weight_decay`,
  `standardize`, `seed`, `metric_units`, `train_features`, `val_features`.
- `knn_probe.json`: `top1`, `top5` (lists over the evaluated `depths`, percent), `best_depth`,
  `best_top1`, `best_top5`, `last_depth` (the deepest evaluated), `last_top1`, `last_top5`, `k`,
  `temperature`, `num_train`, `num_val`, `num_classes`, `num_depths`, `feature_dim`, `method`,
  `metric_units`, `model_step` and `images_seen` (of the model the features came from),
  `train_features`, `val_features`.
- `depth_probe.json`: `rmse` (metres), `absrel`, `delta1` (means over validation images),
  `feature_depth`, `encoder_depth`, `loss_curve` {`epoch`, `train_loss`, `train_ssi`,
  `train_grad`}, `num_train`, `num_val`, `epochs`, `lr`, `betas`, `weight_decay`, `grad_weight`,
  `normalized` ("gt": the reference's loss; "both": the prediction normalised too), `seed`,
  `batch_size`, `image_size`, `depth_resize`, `model`, `weights`, `train_shards`, `val_shards`,
  `strips`.
- `lidar.json`: `lidar`, `rankme`, `num_images`, `num_augmentations`, `seed`, `weights`,
  `model`, `shards`, `embedding`.
"""
