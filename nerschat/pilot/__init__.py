"""Everything that runs on the GPU node: the pilot, engine recipes, container runtimes,
the local CPU engine and the job's walltime.

A pilot starts one server (`engines/`), wrapped in a container runtime (`runtimes`),
publishes it in the registry and keeps it alive until it is stopped."""
