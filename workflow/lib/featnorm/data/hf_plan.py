"""Which files to fetch: the paper author's WebDataset shards on Hugging Face.

File URLs follow `https://huggingface.co/datasets/<repo>/resolve/main/<file>`. The repo
names are in `HF_DATASET_REPOS`, the one place to change them (the download script takes
`--repo` to override). `adams-story/imagenet1k-256-wds` is the repo the reference code's
`download_dataset.py` fetches; the NYU repo name follows the directory name the reference
config uses (`nyu-depthv2-wds`) and is UNVERIFIED. The shard names and counts are those of
SPEC section 2; sizes and hashes are not known in advance (the downloader checks the
server's Content-Length and LFS sha256 instead).
"""

from __future__ import annotations

from dataclasses import dataclass

HF_BASE = "https://huggingface.co/datasets"
HF_DATASET_REPOS = {
    "imagenet": "adams-story/imagenet1k-256-wds",
    "nyu": "adams-story/nyu-depthv2-wds",  # unverified
}

# dataset -> split -> (file name pattern, number of shards, digits)
SHARDS = {
    "imagenet": {"train": ("imagenet1k-train-{:04d}.tar", 1024), "validation": ("imagenet1k-validation-{:02d}.tar", 64)},
    "nyu": {"train": ("nyu-depth-train-{:05d}.tar", 48), "val": ("nyu-depth-val-{:05d}.tar", 1)},
}
SAMPLES = {("imagenet", "train"): 1_281_167, ("imagenet", "validation"): 50_000, ("nyu", "train"): 47_584, ("nyu", "val"): 654}
KEYS = {"imagenet": ["cls", "jpg"], "nyu": ["depth.npy", "jpg"]}


@dataclass(frozen=True)
class PlannedFile:
    url: str
    name: str
    split: str
    size: int | None = None
    sha256: str | None = None


def file_url(repo: str, name: str, revision: str = "main") -> str:
    return f"{HF_BASE}/{repo}/resolve/{revision}/{name}"


def plan(dataset: str, splits: list[str] | None = None, repo: str | None = None) -> list[PlannedFile]:
    if dataset not in SHARDS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(SHARDS)}")
    repo = repo or HF_DATASET_REPOS[dataset]
    splits = splits or list(SHARDS[dataset])
    out = []
    for split in splits:
        if split not in SHARDS[dataset]:
            raise ValueError(f"dataset {dataset} has no split {split!r}; choose from {sorted(SHARDS[dataset])}")
        pattern, n = SHARDS[dataset][split]
        for i in range(n):
            name = pattern.format(i)
            out.append(PlannedFile(file_url(repo, name), name, split))
    return out
