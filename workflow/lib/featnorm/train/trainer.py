"""The pretraining loop: AdamW + schedules + EMA teacher, exact resume, diagnostics.

One step (SPEC section 3): set the step's learning rate; the IJEPA module computes the
loss of a packed batch (teacher on full rows, student on the context, predictor batch
repeat drawn from `window_generator`); a non-finite loss stops the run before any weight
changes; backward, optional gradient clipping, AdamW; EMA update of the teacher.

Exact resume: every state the next step depends on is checkpointed - weights (student,
teacher, predictor, target-norm running statistics), optimizer, step and images seen, the
data position (epoch, batches taken in it), and the torch / CUDA / Python / NumPy RNG
states plus the window-sampling generator. A restarted run continues bit for bit on the
CPU. Checkpoints are written every `train.checkpoint_every` steps, at every end of a pass
over the data, on SIGTERM / SIGINT, and at the end of the run. At `train.snapshot_steps`
the model is also written (atomically) as OUT/snapshots/step-<N>.pt in model.pt's format, for
the learning curve; writing one reads only state, so it changes neither training nor resume.

Several processes (`torchrun --nproc-per-node N`, `dist=DistInfo(rank, N)`; see
featnorm.train.distributed): the model is wrapped in DistributedDataParallel; each rank
trains on its own part of every epoch with `train.batch_size / N` rows (the data source is
built per rank); every step the ranks agree, in one small all-reduce, on whether the epoch
goes on (the epoch ends for all at the first rank that runs out, so per-rank batch counts
may differ) and whether a stop signal arrived anywhere; the loss, metrics and image counts
in the log are over all ranks. Rank 0 alone writes the config, the log, checkpoints and
`model.pt`; every rank reads the checkpoint to resume. A checkpoint keeps every rank's
random state: resuming on the same number of processes continues exactly; on another
number, the data of the interrupted epoch cannot be re-split, so the run continues at the
start of the next epoch (step, images seen, weights and optimizer kept; random streams
re-seeded from (seed, step, rank)).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from featnorm.batch import PackedBatch
from featnorm.config import ConfigError, RunConfig, config_hash, load_run_config, save_run_config, to_dict
from featnorm.data.packing import to_unit_pixels
from featnorm.ijepa.run_model import initial_model, model_file
from featnorm.train.checkpoint import (
    check_config_hash,
    load_latest_checkpoint,
    rng_state,
    save_atomic,
    save_checkpoint,
    set_rng_state,
)
from featnorm.train import distributed as ddp
from featnorm.train.distributed import SINGLE, DistInfo
from featnorm.train.diagnostics import ExternalSinks, JsonlLog, batch_stats, lidar_of_views, rankme_of_targets
from featnorm.train.flops import encoder_counts, predictor_counts, step_flops
from featnorm.train.throughput import ThroughputMeter, peak_tflops
from featnorm.train.schedule import ema_beta, learning_rate
from featnorm.train.signals import StopRequest

CHECKPOINT_FORMAT = 1


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the kept checkpoint."""


@dataclass
class TrainData:
    """What the loop needs from the data pipeline.

    epoch_batches(epoch, skip): the packed batches of pass `epoch` over the training set,
        a deterministic function of (seed, epoch), starting after the first `skip` batches.
    num_images: images per pass (for `train.epochs`), or None if unknown.
    lidar_views(): the fixed LiDAR view set as a list of `(PackedBatch, view_of_sample)`
        (see `diagnostics.lidar_of_views`), or None when LiDAR is not available.
    """

    epoch_batches: Callable[[int, int], Iterator[PackedBatch]]
    num_images: int | None
    lidar_views: Callable[[], list] | None = None


@dataclass
class TrainResult:
    step: int
    images_seen: int
    stopped_by: str  # "done", "SIGTERM", "SIGINT"


def param_groups(model: torch.nn.Module, weight_decay: float, which: str = "all") -> list[dict]:
    """AdamW groups. `which="all"` (the reference): every trainable parameter decays.
    `which="matrices"` (the usual ViT choice): only weight matrices decay; norms, biases,
    DynTanh alphas, learned position tables, register tokens, the mask embedding and what a
    layer names in `no_weight_decay()` (DiffMoE's per-expert biases) do not."""
    from featnorm.layers import AbsolutePositionEmbedding

    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if which == "all":
        return [{"params": [p for _, p in trainable], "weight_decay": weight_decay}]
    if which != "matrices":
        raise ValueError(f"unknown weight_decay_params {which!r}; expected 'all' or 'matrices'")
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, AbsolutePositionEmbedding):
            no_decay_ids.update(id(p) for p in module.parameters())
        # layers may name matrices that are really biases (DiffMoE's per-expert biases)
        for name in getattr(module, "no_weight_decay", lambda: ())():
            no_decay_ids.add(id(getattr(module, name)))
    decay, no_decay = [], []
    for name, p in trainable:
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim < 2 or id(p) in no_decay_ids or leaf in ("registers", "mask_token"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_context(cfg: RunConfig, device: torch.device):
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pull(it: Iterator):
    """The next item of `it`, or None. A DataLoader draws its workers' base seed from the
    global torch RNG when it starts; keep the data pipeline off that stream, or a resume
    (which starts the loader at another moment) would shift the model's random numbers."""
    with torch.random.fork_rng(devices=[]):
        return next(it, None)


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        data: TrainData,
        out_dir: str | Path,
        checkpoint_dir: str | Path,
        force_resume: bool = False,
        device: torch.device | str | None = None,
        progress: bool | None = None,
        dist: DistInfo = SINGLE,
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.out_dir = Path(out_dir)
        self.ckpt_dir = Path(checkpoint_dir)
        self.device = torch.device(device) if device is not None else default_device()
        self.hash = config_hash(cfg)
        self.progress = progress
        self.dist = dist
        t = cfg.train
        if dist.enabled:
            ddp.per_rank_batch_size(t.batch_size, dist.world_size)  # a clear error if not divisible
        if cfg.model.attention_backend == "flex" and self.device.type != "cuda":
            raise ConfigError(f"model.attention_backend = flex trains only on CUDA (torch has no FlexAttention "
                              f"backward on {self.device.type}); set model.attention_backend: sdpa for this device")

        self.model = initial_model(cfg).to(self.device)  # seeds torch's global RNG with cfg.seed
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, t.weight_decay, t.weight_decay_params), lr=t.lr_start, betas=tuple(t.betas), weight_decay=t.weight_decay,
            fused=True,  # one kernel for all parameters, on the CPU as on CUDA
        )
        # each rank draws its own predictor windows (rank 0's stream is the one-process one)
        self.window_generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 1 + 1_000_003 * dist.rank)
        self.forward = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Running statistics are synchronised by the layers themselves (all-reduced batch
            # statistics), so DDP need not broadcast buffers; some options (registers wiped,
            # DiffMoE routing) leave parameters without gradient in a step.
            self.forward = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                broadcast_buffers=False, find_unused_parameters=True,
            )
        if t.compile:
            self.forward = torch.compile(self.forward)
        self.step = 0
        self.images_seen = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.resumed_from: Path | None = None
        self.last_checkpoint: Path | None = None

        found = load_latest_checkpoint(self.ckpt_dir)
        if found is not None:
            state, path = found
            check_config_hash(state, self.hash, path, force_resume)
            self._load_state(state)
            self.resumed_from = self.last_checkpoint = path

        if t.steps > 0:
            self.total_steps: int | None = t.steps
            self.total_images: int | None = None
        else:
            if not data.num_images:
                raise ValueError("train.epochs needs the number of training images; the data pipeline did not report it (set train.steps instead)")
            self.total_steps = None
            self.total_images = int(round(t.epochs * data.num_images))

    # ------------------------------------------------------------------ state

    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config_hash": self.hash,
            "config": to_dict(self.cfg),
            "step": self.step,
            "images_seen": self.images_seen,
            "data_position": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling
            "rng": rng_state(self.window_generator),
            "world_size": self.dist.world_size,
        }

    def _load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.epoch = int(state["data_position"]["epoch"])
        self.batch_in_epoch = int(state["data_position"]["batch_in_epoch"])
        saved_world = int(state.get("world_size", 1))
        per_rank = state.get("rng_per_rank")
        if saved_world == self.dist.world_size:
            set_rng_state(per_rank[self.dist.rank] if per_rank else state["rng"], self.window_generator)
            return
        # Another number of processes: the interrupted epoch's split among ranks cannot be
        # continued, so go on at the next epoch boundary, with fresh per-rank random streams.
        if self.batch_in_epoch > 0:
            self.epoch += 1
            self.batch_in_epoch = 0
        torch.manual_seed(self.cfg.seed + 7919 * self.step + 104_729 * self.dist.rank)
        self.window_generator.manual_seed(self.cfg.seed + 1 + 1_000_003 * self.dist.rank + 7919 * self.step)
        if self.dist.is_main:
            print(f"resuming a {saved_world}-process checkpoint on {self.dist.world_size} processes: "
                  f"continuing at the start of epoch {self.epoch} (step {self.step}, {self.images_seen} images seen)",
                  file=sys.stderr)

    def save_checkpoint(self) -> Path:
        """Every rank calls this at the same steps (it gathers their random states); rank 0 writes."""
        name = f"ckpt-{self.step:09d}.pt"
        if self.last_checkpoint is not None and self.last_checkpoint.name == name and (self.dist.enabled or self.last_checkpoint.exists()):
            return self.last_checkpoint  # nothing new since (e.g. epoch end right after a periodic one)
        if not self.dist.enabled:
            self.last_checkpoint = save_checkpoint(self._state(), self.ckpt_dir, self.step, self.cfg.train.keep_checkpoints)
            return self.last_checkpoint
        per_rank = ddp.gather_objects(rng_state(self.window_generator))
        if self.dist.is_main:
            state = self._state()
            state["rng_per_rank"] = per_rank
            save_checkpoint(state, self.ckpt_dir, self.step, self.cfg.train.keep_checkpoints)
        self.last_checkpoint = self.ckpt_dir / name
        return self.last_checkpoint

    def final_model(self) -> dict:
        """The `model.pt` dict evaluation loads (see featnorm.evaluation.checkpoint_loading)."""
        return model_file(self.model, self.cfg, self.step, self.images_seen)

    # ------------------------------------------------------------------ loop

    def _done(self) -> bool:
        if self.total_steps is not None:
            return self.step >= self.total_steps
        return self.images_seen >= self.total_images

    def _steps_left(self) -> float | None:
        if self.total_steps is not None:
            return self.total_steps - self.step
        if self.step == 0:
            return None
        per_step = self.images_seen / self.step
        return (self.total_images - self.images_seen) / max(per_step, 1e-9)

    def _batches(self) -> Iterator[tuple[PackedBatch, bool]]:
        """Yields (batch, last_of_epoch) forever, keeping (epoch, batch_in_epoch) current."""
        skip = self.batch_in_epoch
        empty_passes = 0
        while True:
            it = iter(self.data.epoch_batches(self.epoch, skip))
            skip = 0
            nxt = pull(it)
            if nxt is None:
                empty_passes += 1
                if empty_passes > 1:
                    raise RuntimeError(f"the training data yielded no batch in epoch {self.epoch}; check data.train_shards = {self.cfg.data.train_shards!r}")
                self.epoch += 1
                self.batch_in_epoch = 0
                continue
            empty_passes = 0
            while nxt is not None:
                cur, nxt = nxt, pull(it)
                yield cur, nxt is None

    def _synced_batches(self, stop: StopRequest) -> Iterator[tuple[PackedBatch, bool, bool]]:
        """Several processes: yields (batch, last_of_epoch, stop) with all three agreed by every
        rank. An epoch ends for all ranks at the first rank that runs out of batches."""
        skip = self.batch_in_epoch
        empty_passes = 0
        while True:
            it = iter(self.data.epoch_batches(self.epoch, skip))
            skip = 0
            cur = pull(it)
            yielded = False
            while True:
                nxt = pull(it) if cur is not None else None
                flags = torch.tensor([float(cur is None), float(nxt is None), float(stop.requested)])
                if self.dist.enabled:
                    flags = flags.to(self.device)
                    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
                none_here, last, stop_now = (bool(v) for v in flags.tolist())
                if none_here:
                    break
                yielded = True
                yield cur, last, stop_now
                if last:
                    break
                cur = nxt
            if not yielded:  # some rank had nothing in this epoch
                empty_passes += 1
                if empty_passes > 1:
                    raise RuntimeError(f"the training data yielded no batch on some rank in epoch {self.epoch}; check data.train_shards = "
                                       f"{self.cfg.data.train_shards!r} (enough images for {self.dist.world_size} processes?)")
                self.epoch += 1
                self.batch_in_epoch = 0
            else:
                empty_passes = 0

    def train_step(self, batch: PackedBatch) -> tuple[dict, object]:
        t = self.cfg.train
        lr = learning_rate(t, self.step, self._steps_left())
        beta = ema_beta(t, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(self.device, non_blocking=True)
        if batch.pixels.dtype == torch.uint8:  # loaded as bytes (CUDA, see data_source): scale on the device
            batch = PackedBatch(to_unit_pixels(batch.pixels, batch.token_ids), batch.token_ids, batch.context_length)
        with autocast_context(self.cfg, self.device):
            out = self.forward(batch, generator=self.window_generator)
        loss = out.loss.float()
        loss_value = float(loss.detach())
        if self.dist.enabled:  # the global loss (every rank sees the same value, so all stop together on NaN)
            loss_value = ddp.mean_over_ranks({"loss": loss_value}, self.device)["loss"]
        if not math.isfinite(loss_value):
            kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
            raise NonFiniteLossError(f"loss is {loss_value} at step {self.step + 1}; stopping, {kept}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        row = {"loss": loss_value, "lr": lr, "ema_beta": beta}
        # the objective's diagnostics (predicted tokens, target spread and norm; with DiffMoE the
        # prediction loss alone, the auxiliary loss, experts per token) are logged beside the loss
        if out.stats:  # one device sync for all of them
            values = torch.stack([v.detach().float() for v in out.stats.values()]).tolist()
            row.update(zip(out.stats.keys(), values))
        if t.grad_clip > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip))
        self.optimizer.step()
        self.model.ema_update(beta)
        return row, out

    def _global_stats(self, stats: dict) -> dict:
        """Batch statistics over every rank's batch: image and token counts summed, rates
        and sizes weighted by images."""
        n = stats["images"]
        s = ddp.sum_over_ranks({"images": n, "real_tokens": stats["real_tokens"],
                                "mask_rate": stats["mask_rate"] * n, "mean_side": stats["mean_side"] * n}, self.device)
        images = max(s["images"], 1.0)
        return {**stats, "images": int(round(s["images"])), "real_tokens": int(round(s["real_tokens"])),
                "mask_rate": s["mask_rate"] / images, "mean_side": s["mean_side"] / images}

    def _global_row(self, row: dict) -> dict:
        """Loss (already global) and per-step values averaged over ranks (identical ones stay)."""
        rest = {k: v for k, v in row.items() if k != "loss" and isinstance(v, (int, float))}
        return {**row, **ddp.mean_over_ranks(rest, self.device)}

    def _lidar_views(self):
        """The fixed LiDAR views: rank 0 reads or draws them (and stores the set), the other
        ranks get them from rank 0; every rank then computes the same LiDAR value."""
        if not self.dist.enabled:
            return self.data.lidar_views()
        box = [self.data.lidar_views() if self.dist.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def run(self) -> TrainResult:
        cfg, t = self.cfg, self.cfg.train
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            _write_config_once(cfg, self.out_dir / "config.yaml")
            log = JsonlLog(self.out_dir / "train_log.jsonl", self.step if self.resumed_from else None)
            sinks = ExternalSinks(t.tensorboard, t.wandb, self.out_dir, cfg.name, to_dict(cfg))
        else:
            log = sinks = _NoSink()
        lidar_views = None
        # images/s, tokens/s, TFLOP/s, MFU and the projected run time (featnorm.train.throughput)
        meter = ThroughputMeter(peak_tflops(self.device)[0], self.dist.world_size)
        snapshot_steps = set(t.snapshot_steps)
        bar = _progress_bar(self.total_steps, self.step, self.progress) if main else None
        self.model.train()
        stopped_by = "done"
        try:
            with StopRequest() as stop:
                if self.resumed_from is None and self.step == 0:
                    self.save_checkpoint()  # step 0: a NaN on the first steps still leaves a start point
                batches = self._synced_batches(stop) if self.dist.enabled else self._batches()
                tick = time.perf_counter()
                while not self._done():
                    if self.dist.enabled:
                        batch, last_of_epoch, stop_now = next(batches)
                        if stop_now:
                            stopped_by = stop.name or "SIGTERM"  # the signal may have reached another rank
                            break
                    else:
                        if stop.requested:
                            stopped_by = stop.name
                            break
                        batch, last_of_epoch = next(batches)
                    stats = batch_stats(batch, cfg.model.patch_size)
                    if self.dist.enabled:
                        stats = self._global_stats(stats)
                    row, out = self.train_step(batch)
                    # model FLOPs from the batch's ids (CPU) and the predictor's counts (in row)
                    row["step_flops"] = step_flops(cfg.model, encoder_counts(batch.token_ids),
                                                   encoder_counts(batch.context_ids), predictor_counts(row))["total"]
                    if self.dist.enabled:
                        row = self._global_row(row)
                        row["step_flops"] *= self.dist.world_size  # the mean over ranks -> their sum
                    self.step += 1
                    self.images_seen += stats["images"]
                    self.batch_in_epoch += 1
                    if last_of_epoch:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    now = time.perf_counter()
                    dt, tick = now - tick, now
                    full = {"step": self.step}
                    if self.data.num_images:
                        full["epoch"] = self.images_seen / self.data.num_images
                    flops = row.pop("step_flops")
                    full.update(images_seen=self.images_seen, **row, images=stats["images"],
                                **meter.update(dt, stats["images"], stats["real_tokens"], flops),
                                mask_rate=stats["mask_rate"], mean_side=stats["mean_side"])
                    full.update(meter.projection(self.step, self.images_seen, self.total_steps, self.total_images))
                    if self.step % t.log_every == 0 or self._done():
                        log.write(full)
                        sinks.write(full)
                    if t.rankme_every > 0 and self.step % t.rankme_every == 0 and main:  # rank 0's targets
                        r = {"step": self.step, "rankme": rankme_of_targets(out.targets)}
                        log.write(r)
                        sinks.write(r)
                    if t.lidar_every > 0 and self.step % t.lidar_every == 0 and self.data.lidar_views is not None:
                        if lidar_views is None:
                            lidar_views = self._lidar_views()
                        r = {"step": self.step, "lidar": lidar_of_views(self.model.student, lidar_views, t.lidar_images, t.lidar_augmentations, self.device),
                             "lidar_images": t.lidar_images, "lidar_augmentations": t.lidar_augmentations}
                        log.write(r)
                        sinks.write(r)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{full['images_per_s']:.0f}", refresh=False)
                    if self.step in snapshot_steps and main:  # learning-curve snapshots: no state, no RNG touched
                        save_atomic(self.final_model(), snapshot_path(self.out_dir, self.step))
                    if self.step % t.checkpoint_every == 0 or last_of_epoch:
                        self.save_checkpoint()
                        tick = time.perf_counter()  # checkpoint time is not training throughput
                self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            log.close()
            sinks.close()
        if stopped_by == "done" and self.dist.is_main:
            save_atomic(self.final_model(), self.out_dir / "model.pt")
            missed = [s for s in t.snapshot_steps if s > self.step]
            if missed:  # only possible when the length is given in epochs
                print(f"warning: train.snapshot_steps {missed} were never reached (training ended at step {self.step})",
                      file=sys.stderr)
        ddp.barrier()  # model.pt is complete when any rank returns
        return TrainResult(self.step, self.images_seen, stopped_by)


def snapshot_path(out_dir: str | Path, step: int) -> Path:
    """Where the snapshot of `train.snapshot_steps` step `step` goes: OUT/snapshots/step-<step>.pt."""
    return Path(out_dir) / "snapshots" / f"step-{step}.pt"


class _NoSink:
    """Log and sinks of ranks other than 0: they write nothing."""

    def write(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _write_config_once(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config unless the file already says the same (the workflow passes
    this very file as --config; rewriting it would only touch its modification time)."""
    if path.is_file():
        try:
            if load_run_config(path) == cfg:
                return
        except ConfigError:
            pass
    save_run_config(cfg, path)


def _progress_bar(total: int | None, initial: int, enabled: bool | None):
    if enabled is False:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # disable=None: on automatically only when stderr is a terminal.
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                disable=None if enabled is None else not enabled)
