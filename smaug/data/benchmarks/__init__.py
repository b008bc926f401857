"""Readers of the standard video-language benchmarks' own release files, one module per family:

    msrvtt       MSRVTT_JSFUSION_test.csv (1k-A), {train_val,test}_videodatainfo.json, MSR_MC_test.csv,
                 {train,val,test}_qa.json (MSRVTT-QA)
    didemo       {train,val,test}_data.json (paragraph retrieval)
    activitynet  train.json / val_1.json (ActivityNet Captions, paragraph retrieval), {split}_q.json +
                 {split}_a.json (ActivityNet-QA)
    msvd         AllVideoDescriptions.txt + {train,val,test}_list.txt
    lsmdc        LSMDC16_*.csv (header-less TSV; per-movie video folders)
    preprocessed the peers' preprocessed JSON ([{"video" | "image", "caption"}], MC and QA rows)
    common       the sets they return (RetrievalSet, QuestionSet, Coverage) and VideoFinder (release names ->
                 files on disk)
    config       the benchmarks YAML of tools/eval_benchmarks.py (`load_suite`, `KINDS`)

Each reader turns a release into clips with their queries (or questions) and the protocol, and the eval-JSON rows
the tools consume (`RetrievalSet.rows()`: tools/eval_retrieval.py --json, tools/make_shards.py --json,
tools/finetune_retrieval.py; `QuestionSet.rows()`: tools/eval_mc.py, tools/finetune_qa.py). A listed video that is
not on disk is counted in the coverage, never dropped silently. Imports neither torch nor the trainer.
"""
