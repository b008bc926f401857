"""VideoQA fine-tuning on the pre-training trainer: `QATrainer` = `Trainer` with `QAModel`, the QA loader
and QA evaluation at the end (`smaug.eval.qa`); the run config is `smaug.eval.qa.QARunConfig` (a `qa` section).

    python -m smaug.train.qa --config INIT_CONFIG.yaml --config smaug/configs/finetune_qa.yaml --out runs/qa \\
        model.init_from=runs/pt qa.train_json=train.json ...     # tools/finetune_qa.py does all of it
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Optional

from smaug.eval.qa import QARunConfig, format_qa, run_qa_eval

from .trainer import Trainer, _keep_rng
from .trainer import main as trainer_main


class QATrainer(Trainer):
    """The pre-training trainer with QAModel, the QA loader and QA evaluation."""

    def build_model(self, found):
        from smaug.models.answer_decoder import QAModel

        q = self.cfg.qa
        model = QAModel(self.mcfg, q.decoder_layers, q.blind)
        if found is None:
            if self.cfg.model.init_from:
                from smaug.checkpoint import load_weights

                missing, unexpected = load_weights(model, self.cfg.model.init_from)
                new = [k for k in missing if not k.startswith("answer_decoder.")]
                self._say(
                    f"initialised from {self.cfg.model.init_from} (missing {len(new)} besides the "
                    f"answer decoder, unexpected {len(unexpected)})"
                )
            else:
                self.init_towers(model)
            model.init_answer_decoder()
            self._say(
                f"answer decoder: {len(model.answer_decoder.layers)} layers from the fusion layers"
                + ("; BLIND baseline: every clip is replaced by a black one" if q.blind else "")
            )
        return model

    def forward_state(self) -> dict:
        """QAModel's forward takes the batch alone: no MAE masking, no VTM negatives."""
        return {}

    def build_loader(self, seed: int, state):
        from smaug.data.qa_data import QATrainLoader, make_clip_source, read_qa

        q, d = self.cfg.qa, self.cfg.data
        rows, bad = read_qa(q.train_json, q.video_root)
        clips = make_clip_source(d, self.tokenizer, video_root=q.video_root, shards=q.video_shards)
        self._say(f"QA training rows: {len(rows)} usable, skipped {dict(bad)}")
        return QATrainLoader(
            rows,
            clips,
            self.tokenizer,
            d.batch_size,
            self.rank,
            self.world,
            seed,
            state,
            d.num_workers,
            d.max_text_len,
            q.max_answer_len,
            bad,
        )

    def evaluate(self) -> Optional[dict]:
        q = self.cfg.qa
        if not q.test_json:
            return None
        with _keep_rng(self.device):
            d = self.cfg.data
            dcfg = dataclasses.replace(d, num_frames=self.cfg.eval.num_frames or d.num_frames)
            report = run_qa_eval(
                self.model,
                q,
                dcfg,
                self.tokenizer,
                self.device,
                self.rank,
                self.world,
                checkpoint=str(self.out),
                init_from=self.cfg.model.init_from,
                step=self.step,
                precision=self.cfg.train.precision,
            )
        self.monitor.log({"step": self.step, "eval/qa_acc": report["results"]["accuracy"]})
        for line in format_qa(report).splitlines():
            self._say(line)
        if self.is_main:
            (self.out / "qa_eval.json").write_text(json.dumps(report, indent=2) + "\n")
        return report


def main(argv=None) -> int:
    return trainer_main(argv, trainer_cls=QATrainer, config_cls=QARunConfig)


if __name__ == "__main__":
    sys.exit(main())
