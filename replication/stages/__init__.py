"""The pipeline's stages: one module per stage of dvc.yaml, named as the stage, each what its notebook calls.

A stage module declares
    params(profile=None, overrides=None) -> config.Params   the params.yaml sections it reads (`params.sections`)
    run(p, show_progress=True)                              params -> spec -> one call -> write the outputs
    show(result, p)                                         the table or figure its notebook displays
and, for the fine-tuning stages, `build(p)`: the method exactly as the stage trains it (the benchmarks time it).

Each notebook imports only its own stage's module, so a stage's DVC dependencies are the import closure of that
module (`python -m replication.pipeline deps` writes them into dvc.yaml): this package's `__init__` imports nothing.
`python -m replication.stages <stage>` runs one stage without a notebook, e.g. on several GPUs:
`accelerate launch -m replication.stages sft_sharpening --profile sdxl`; `python -m replication.stages check`
validates params.yaml against every stage's sections.
"""
