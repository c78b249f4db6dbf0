"""Ray actors of chainray: the RateLimiter, the Coordinator and the step runners."""

if __name__ != "chainray.actors":  # the folder is not a package of its own; see pyproject.toml
    raise ImportError("actors/ is installed as chainray.actors: import chainray.actors")
