"""chainray: run LLM prompt chains on Ray under one rate limit, and measure the schedules."""

if __name__ != "chainray":  # the folder is not a package of its own; see pyproject.toml
    raise ImportError("runtime/ is installed as chainray: import chainray")
