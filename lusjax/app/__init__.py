"""The application layer: glue that joins the library (lusjax.data, eval, models,
ssl, checkpoint, ...) with data_prep's writers and the workflows (train, study).

    default_data   `config.data` -> a dataset folder, generating the embedded synthetic
                   one (data_prep's writer) on first use
    predict        `lusjax predict`: ingest a folder of clips (data_prep.ingest), all heads
    probe          `lusjax probe`: a quick linear probe of a run vs a random-init twin
    quickstart     `lusjax quickstart`: synthetic data -> SimCLR -> probe table
    bench_step     `lusjax bench step`: throughput of the jitted train step
    bench_input    `lusjax bench input`: throughput of the input pipeline

Nothing in the library imports this package (tests/test_imports.py checks it).
"""
