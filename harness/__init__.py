"""mnn-matrix: a cross-version compatibility test harness for the MNN inference engine."""

__version__ = "0.1.0"
