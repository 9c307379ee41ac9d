"""The jobs users run on exports: `flag` on one machine (`jobs.flag`) or on Apache Spark (`jobs.spark`)."""
