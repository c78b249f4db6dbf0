

if __name__ != "chainray.scenarios":  # the folder is not a package of its own; see pyproject.toml
    raise ImportError("scenarios/ is installed as chainray.scenarios: import chainray.scenarios")
