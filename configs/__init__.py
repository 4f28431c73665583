"""Run configurations shipped with the package: `default.yaml` (the CPU default of `python -m engine.run`) and
the GPU recipes in `recipes/`. A YAML file, not code: pass one with `--config`; this package only makes an
installed copy (`pip install .`) carry them beside `engine/`."""
