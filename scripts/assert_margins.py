"""For the test matrix: log how far every compared value in an ``assert`` is from its bound.

``scripts/run_notebooks.py --matrix`` runs ``install(get_ipython(), log_path)`` in each notebook's kernel
before the first cell. From then on every comparison inside an ``assert`` (``rate >= 0.9``,
``0.30 < share < 0.45``, ``(l2 <= corner).all()``) is evaluated as before, in the same order and with
the same short-circuits, and its margin is appended to the log as one JSON line:

    margin = (bound side - value side) / max(|left|, |right|)   for <, <=   (mirrored for >, >=)

as ``nnvis_helpers.claims.relative_margin`` computes it; ``claim(...)`` logs itself to the same file. For
tensors the smallest margin of all elements is kept. Equalities and membership tests are not logged: they
hold or not. Nothing here changes what a cell computes or prints; a logging error is swallowed, so the
notebook runs as it would without it.
"""
import ast
import json
import operator
import os

_OPERATORS = {ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le), ast.Gt: (">", operator.gt),
              ast.GtE: (">=", operator.ge), ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne),
              ast.Is: ("is", operator.is_), ast.IsNot: ("is not", operator.is_not),
              ast.In: ("in", lambda a, b: a in b), ast.NotIn: ("not in", lambda a, b: a not in b)}
_BY_SYMBOL = {symbol: function for symbol, function in _OPERATORS.values()}
_LOG = None   # the log file, set by install()


def _as_floats(value):
    """A flat float64 array of a number, a NumPy array or a tensor; None for anything else."""
    import numpy as np

    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return np.array([float(value)])
    try:
        import torch

        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bool or value.numel() == 0:
                return None
            return value.detach().double().flatten().cpu().numpy()
    except ImportError:
        pass
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu" and value.size:
        return value.astype(float).ravel()
    if isinstance(value, np.generic) and np.issubdtype(type(value), np.number):
        return np.array([float(value)])
    return None


def _record(key, symbol, left, right):
    import numpy as np

    a, b = _as_floats(left), _as_floats(right)
    if a is None or b is None or symbol not in ("<", "<=", ">", ">="):
        return
    a, b = np.broadcast_arrays(a, b)
    gap = (b - a) if symbol in ("<", "<=") else (a - b)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-12)
    margins = gap / scale
    worst = int(np.nanargmin(margins)) if np.isfinite(margins).any() else 0
    with open(_LOG, "a") as log:
        log.write(json.dumps({"assert": key, "op": symbol, "left": float(a[worst]), "right": float(b[worst]),
                              "margin": float(margins[worst])}) + "\n")


def __nnvis_compare__(key, symbols, *operands):
    """``a < b < c`` as Python evaluates it (left to right, stopping at the first false link), logged."""
    left = operands[0]()
    for link, (symbol, thunk) in enumerate(zip(symbols, operands[1:])):
        right = thunk()
        outcome = _BY_SYMBOL[symbol](left, right)
        try:
            _record(key, symbol, left, right)
        except Exception:
            pass
        if link == len(symbols) - 1 or not outcome:   # the last link, or a false one, is the answer
            return outcome
        left = right


class _LogComparisons(ast.NodeTransformer):
    """Inside each ``assert``, replace ``a op b`` by a logged call that evaluates the operands lazily."""

    def visit(self, tree):
        return ast.fix_missing_locations(super().visit(tree))

    def visit_Assert(self, node):
        key = ast.unparse(node.test)
        node.test = _Compare(key).visit(node.test)
        return node


class _Compare(ast.NodeTransformer):
    def __init__(self, key):
        self.key = key

    def visit_Compare(self, node):
        self.generic_visit(node)
        thunk = lambda expression: ast.Lambda(args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[],
                                                                  defaults=[]), body=expression)
        symbols = ast.Tuple(elts=[ast.Constant(_OPERATORS[type(op)][0]) for op in node.ops], ctx=ast.Load())
        call = ast.Call(func=ast.Name("__nnvis_compare__", ast.Load()),
                        args=[ast.Constant(self.key), symbols, thunk(node.left), *map(thunk, node.comparators)], keywords=[])
        return ast.copy_location(call, node)

    def visit_Lambda(self, node):  # a lambda's body runs later, outside the assert: leave it alone
        return node


def install(shell, log_path):
    """Log the comparisons of every ``assert`` that ``shell`` (an IPython shell) runs from now on into ``log_path``."""
    global _LOG
    _LOG = log_path
    os.environ["NNVIS_CLAIMS_LOG"] = log_path   # nnvis_helpers.claim() logs its claims there too
    shell.user_ns["__nnvis_compare__"] = __nnvis_compare__
    shell.ast_transformers.append(_LogComparisons())
