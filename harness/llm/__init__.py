"""The `llm` suite: LLM packages made by each MNN version's exporter (transformers/llm/export) and converter, loaded
and run by each version's `MNN.llm`. models: the tiny decoders; exporter: packages, cached; run: the cells."""
