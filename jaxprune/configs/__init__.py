"""Config building blocks shared by the experiment configs in the repository's ``configs/``.

* :mod:`jaxprune.configs.default`: ``get_config()`` declares every field of a run, with a comment.
* :mod:`jaxprune.configs.recipes`: argument parsing and the shared training recipes.

Being part of the installed package, they let ``python -m jaxprune.main --config
/abs/path/configs/x.py`` run from any working directory.
"""
