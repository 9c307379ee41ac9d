"""Training: the scikit-learn pipelines built from config (`model`), fitting and the validation-time
choices (`train`), metrics (`evaluate`), the nudge list scored on held-out conversations (`flag_eval`) and
model selection (`tune`). Nothing here is imported by serving or inference."""
