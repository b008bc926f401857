"""The command-line tools, installed as the `smaug_tools` package (as open_clip ships `open_clip_train` next to
`open_clip`) with console entry points (`pyproject.toml` [project.scripts]):

    tools/make_synthetic.py     smaug-make-synthetic      the built-in synthetic corpus (WebVid layout)
    tools/make_shards.py        smaug-make-shards         raw corpora -> WebDataset shards
    tools/index_shards.py       smaug-index-shards        manifest for foreign shards (video2dataset layout)
    tools/build_tokenizer.py    smaug-build-tokenizer     a WordPiece tokenizer from captions
    tools/eval_retrieval.py     smaug-eval-retrieval      zero-shot text-video retrieval (VTC, VTM rerank)
    tools/eval_mc.py            smaug-eval-mc             multiple-choice evaluation
    tools/eval_qa.py            smaug-eval-qa             VideoQA evaluation of a fine-tuned run
    tools/eval_benchmarks.py    smaug-eval-benchmarks     the standard benchmarks from their own files: one table
    tools/finetune_retrieval.py smaug-finetune-retrieval  retrieval fine-tuning (VTC + VTM)
    tools/finetune_qa.py        smaug-finetune-qa         VideoQA fine-tuning
    tools/export_hf.py          smaug-export-hf           Hugging Face folder (or a timm ViT) from a checkpoint

In a checkout, `python tools/<tool>.py ...` runs the same `main(argv)` (`launch/setup_env.sh` installs smaug
editable, so the tools import it without any path edits). Training itself: `smaug-train` (`python -m smaug.train`).
"""
