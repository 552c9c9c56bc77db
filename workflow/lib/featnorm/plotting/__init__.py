"""The paper's figures and tables, built from run result directories.

One module per figure or table, each with a `make_*` function that a script in `scripts/`
wraps (`scripts/fig_*.py`, `scripts/table_summary.py`):

| module | output |
| --- | --- |
| `loss_maps.py` | per-token loss averaged over random context/target masks, per image and run |
| `pca_features.py` | first three principal components of patch features as RGB, or as the reference's HSV |
| `token_loss_distribution.py` | ECDF of per-token losses (log axis) + tail statistics |
| `sample_losses.py` | histograms of each image's mean token loss and token-loss variance (plot-sample-losses) |
| `mean_loss.py` | loss per position averaged over many images, per-channel loss image (plot-mean-loss) |
| `mask_picture.py` | the first packed training rows with their context patches marked (make-viz) |
| `token_energy.py` | L2 norm of each patch's teacher output feature |
| `training_curves.py` | loss, LiDAR and RankMe against images seen |
| `linear_probe_depth.py` | linear-probe top-1 against encoder depth (seeds: mean and band) |
| `gain_vs_steps.py` | k-NN top-1 and its gain over random init against training steps |
| `summary_table.py` | one row per run (seeds: mean ± std, n): differing settings, every metric, gain over random init (CSV, Markdown, LaTeX) |

Shared helpers: `run_results.py` (reading a run directory), `run_groups.py` (a run's seed
copies as one group, the random-init baselines and which one each group is compared with), `image_sources.py` (images from
validation shards or a folder), `model_io.py` (the model of a run and its per-image forward
passes), `predicted_tokens.py` (which tokens an I-JEPA forward predicted and their losses, in
the training or the predict-all forward), `style.py` (matplotlib/seaborn setup and saving), `image_grid.py` (the one-row-per-
image layout of the per-image figures), `script_options.py` (the options every script spells
the same way, and the common steps of the per-image scripts), `synthetic_runs.py` (generated run directories for tests
and previews).
"""
