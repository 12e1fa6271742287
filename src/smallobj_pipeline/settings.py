"""Project settings (Kedro 1.x). See https://docs.kedro.org/en/stable/configure/configuration_basics/

Environments: ``conf/base`` (shared, committed), ``conf/local`` (machine-specific, git-ignored,
the default run env) and ``conf/study`` (the full study of seed 003: ``kedro run --env=study``;
set ``KEDRO_ENV=study`` too so the pipeline registry declares the study's experiments) and
``conf/pretrain_study`` (in-domain pretrained backbone vs from scratch on the sample:
``make pretrain-study``).
"""

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
