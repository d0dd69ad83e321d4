"""The recipes, installed as the package ``xmeta.recipes`` (pyproject's ``package-dir``).

Run them by name with ``xmeta train --recipe meta_train --config protonet``, list them with
``xmeta recipes list``, or run a file directly: ``python recipes/meta_train.py --config ...``.
Nothing imports this package; ``xmeta.recipes_index`` finds its files.
"""
