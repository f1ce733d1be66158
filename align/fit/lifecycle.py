"""What a fit says about itself to the shared run lifecycle (:mod:`tokalign.align.training.run_lifecycle`).

Its kind (:data:`tokalign.align.formats.outputs.FIT_RUN`), its record (``config.json``: the config, its
trajectory, the LM and corpus identities, the split, the versions), its product (the table), and the identities a
resumed fit must find again once the corpus and the LM are open (:meth:`FitRun.check_inputs`).
"""

from __future__ import annotations

import os
from typing import Any

from tokalign.align.errors import TokalignError
from tokalign.align.fit import guards
from tokalign.align.fit.config import FitConfig
from tokalign.align.fit.split import SCHEME as SPLIT_SCHEME, Split
from tokalign.align.formats import outputs
from tokalign.align.formats import run_folder as rd
from tokalign.align.training.run_lifecycle import RunLifecycle

_FIX = "resume with the original --corpus and --lm, or start a new --run"


class FitRun(RunLifecycle):
    """A fit's run folder: continued with ``--resume`` once it holds a checkpoint or a table."""

    kind, what, record_name, checkpoints, summary_name = outputs.FIT_RUN, "fit", rd.CONFIG, rd.CHECKPOINTS, rd.SUMMARY
    products = (rd.TABLE,)
    noun, resumable, fresh = "a fit", "checkpoint", "a new fit"
    fix = "resume with the original settings or start a new --run"

    @classmethod
    def of(cls, config: FitConfig) -> "FitRun":
        """The lifecycle of ``config``'s run (the main process is rank 0)."""
        return cls(config.run_dir, resume=config.resume, trajectory=config.trajectory(), inputs=(config.corpus,),
                   main=os.environ.get("RANK", "0") == "0")

    def check_inputs(self, corpus, lm) -> None:
        """A resumed run must see the same codebook, d_model, LM embeddings, corpus and split it started with."""
        saved = self.read_record() or {}
        was_codebook = saved["corpus"]["image_tokenizer"]["codebook_size"]
        if was_codebook != corpus.codebook_size:
            raise TokalignError(f"the run was fit on a {was_codebook}-code image tokenizer, this corpus has "
                                f"{corpus.codebook_size} codes; {_FIX}")
        if saved["lm"]["d_model"] != lm.d_model:
            raise TokalignError(f"the run was fit against d_model {saved['lm']['d_model']}, this LM has {lm.d_model}; {_FIX}")
        if saved["lm"]["embedding_sha256"] != lm.embedding_sha256:
            raise TokalignError(f"the LM's embeddings differ from the ones the run was fit against; {_FIX}")
        if saved["corpus"]["image_tokenizer"].get("sha256") != corpus.image_tokenizer.get("sha256"):
            raise TokalignError(f"the corpus was made with another image tokenizer than the run's; {_FIX}")
        if saved["corpus"]["items"] != corpus.items:
            raise TokalignError(f"the run was fit on a corpus of {saved['corpus']['items']} pairs, this one has "
                                f"{corpus.items} (its held-out split would change); {_FIX}")
        guards.check_corpus_fingerprint(saved, corpus, _FIX)
        if saved.get("split", {}).get("scheme") != SPLIT_SCHEME:
            raise TokalignError("the run was started by an earlier tokalign with another held-out split and data "
                                "order; finish it with that version or start a new --run")

    def write_config(self, config: FitConfig, corpus, lm, split: Split, world: int) -> None:
        """The record: the config, the LM and corpus identities, the split, the process count, the versions."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write_record({
            "config": config.to_json(),
            "lm": {"spec": lm.spec, "identity": lm.identity, "embedding_sha256": lm.embedding_sha256,
                   "vocab_size": lm.vocab_size, "d_model": lm.d_model},
            "corpus": {"path": str(corpus.root.resolve()), "items": corpus.items,
                       "image_tokenizer": corpus.image_tokenizer, "text_tokenizer": corpus.text_tokenizer,
                       "fingerprint": guards.corpus_fingerprint(corpus)},
            "split": split.record(), "processes": world, "versions": _versions()})


def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        tokalign_version = version("tokalign")
    except PackageNotFoundError:
        tokalign_version = "unknown"
    return {"tokalign": tokalign_version, "torch": torch.__version__}
