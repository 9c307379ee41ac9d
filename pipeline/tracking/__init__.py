"""Where runs and models go: MLflow runs, registration and the champion alias (`runs`), the registered
model's code (`mlflow_model`), a shared tracking server on PostgreSQL (`server`), and the BentoML model
store (`bento`)."""
