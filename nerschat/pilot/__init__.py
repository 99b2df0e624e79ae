"""Everything that runs on the GPU node.

The pilot (`pilot`), engine recipes (`engines/`), container runtimes (`runtimes`), the
probes of its own server (`probes`), the local CPU engine and the job's walltime. A pilot
starts one server, wrapped in a container runtime, publishes it in the registry and keeps
it alive and truthful until it is stopped.
"""
