"""The jobs users run: `flag` on one machine (`jobs.flag`) or on Apache Spark (`jobs.spark`), train-and-track,
predict and evaluate (`jobs.workflows`), and the labelling queue (`jobs.select`)."""
