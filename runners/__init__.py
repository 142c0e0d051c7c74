"""drbot's runners: contract tests over tiny offline pipelines, and the Redis job consumer that runs them."""
