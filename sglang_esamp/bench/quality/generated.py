"""What the model generated, for diversity: a code reply without what it copied from the prompt.

A HumanEval reply restates the prompt -- its imports, the signature and the docstring -- before the body, and often
explains the code after it. Diversity measured on the whole reply is then mostly the shared prompt and the opening
words of the prose. ``code_body`` keeps the program the model wrote: the code of the reply (``tasks.extract_code``),
without the top-level statements that repeat the prompt's (the same import, the same helper function), and of each
function the prompt defines, the body without its docstring. Statements the model added (its own helpers, imports)
stay. Code that does not parse falls back to dropping the lines that repeat a line of the prompt (stripped).
Other tasks' replies are generated from the first token on and are used whole.
"""
from __future__ import annotations

import ast
import textwrap
from typing import Dict, List, Optional

from .tasks import extract_code


DIVERSITY = {
    "generated": "on what the model generated: HumanEval's code body without the echoed prompt (generated.py), other "
                 "replies whole; MiniLM over the whole text (chunked, pooled: embeddings.py); distinct-n pooled over "
                 "the group and per sample pair",
    "reply": "on the whole reply, MiniLM truncating at 256 word-pieces, distinct-n pooled over the group (the "
             "reports until 2026-12-07)",
}


def _start(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", None) or []
    return min([node.lineno] + [d.lineno for d in decorators])


def _lines(lines: List[str], first: int, last: int) -> str:
    return textwrap.dedent("\n".join(lines[first - 1:last])).strip("\n")


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _body_without_docstring(fn: ast.AST, lines: List[str]) -> Optional[str]:
    body = list(fn.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    if not body:
        return None
    return _lines(lines, _start(body[0]), body[-1].end_lineno)


def _without_prompt_lines(code: str, prompt: str) -> str:
    seen = {line.strip() for line in prompt.splitlines() if line.strip()}
    return "\n".join(line for line in code.splitlines() if line.strip() not in seen).strip("\n")


def code_body(reply: str, prompt: str, entry_point: Optional[str] = None) -> str:
    """The code the model wrote in ``reply`` to complete ``prompt`` (see the module docstring)."""
    code = extract_code(reply, entry_point)
    try:
        tree, ptree = ast.parse(code), ast.parse(prompt)
    except SyntaxError:
        return _without_prompt_lines(code, prompt)
    echoed = {ast.dump(n) for n in ptree.body}
    prompt_fns: Dict[str, str] = {n.name: ast.dump(n) for n in ptree.body
                                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    lines = code.splitlines()
    parts = []
    for node in tree.body:
        if ast.dump(node) in echoed:
            continue                                   # an import or helper copied as the prompt has it
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in prompt_fns:
            body = _body_without_docstring(node, lines)
            if body:
                parts.append(body)
        elif not _is_docstring(node):
            parts.append(_lines(lines, _start(node), node.end_lineno))
    return "\n".join(parts)


def generated_text(task: str, problem_data: dict, reply: str) -> str:
    """The part of ``reply`` that diversity is measured on: for ``humaneval`` its ``code_body``, else the reply."""
    if task == "humaneval":
        return code_body(reply, problem_data["prompt"], problem_data.get("entry_point"))
    return reply
