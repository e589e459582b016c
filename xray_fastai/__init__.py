"""A fastai teaching toolkit for deep learning on pediatric chest X-rays: classification, embeddings, anomaly detection and explainability."""

__version__ = "0.0.1"
