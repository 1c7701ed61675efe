"""Modal backend: deploys core's model server to Modal GPUs, with hybrid windows applied live per experiment."""
