"""The prompts of the prompt-pool methods, chosen or composed per sample from the query
(``models.prompts``: the frozen backbone's pre-logits features of the input, q, which the model
hands to each of them by ``set_query(q)`` before the forward).

- :class:`L2PPool` (Wang et al., CVPR 2022): M prompts of L tokens, each with a key k_m. The N
  keys most cosine-similar to q choose the prompts, concatenated (N L tokens) and inserted once
  before the first block (shallow prompt tuning). Its auxiliary loss is L2P's surrogate
  -lambda (1/B) sum_b sum_{m chosen for b} cos(q_b, k_m), which pulls the chosen keys to the
  queries. The whole pool is shared by all tasks and trained on each.
- :class:`GeneralPrefix` and :class:`ExpertPrefixes` (DualPrompt, Wang et al., ECCV 2022): a
  general prefix (L_g key and L_g value entries per G-layer) shared by all tasks, and per task an
  expert prefix (L_e entries per E-layer) with a key k_t. In training a sample uses its own
  task's expert, whose key is pulled to the queries by lambda (1 - cos(q, k_t)); given a task,
  that task's; without a task id, the expert whose key is the most cosine-similar to q. A new
  task's expert prefixes start as a copy of the previous task's (the official code's
  ``shared_prompt_pool``), its key at random (``shared_prompt_key`` is off there).
- :class:`CodaPrefixes` (CODA-Prompt, Smith et al., CVPR 2023): per prefix layer, components
  (P_m, K_m, A_m) added per task (C per task) and frozen with their task; the prompt is
  sum_m alpha_m P_m with alpha_m = cos(q * A_m, K_m) (no hard choice, end to end), its first half
  the key prefix and its second half the value prefix. A new task's components start orthogonal
  to the earlier ones (Gram-Schmidt, while they fit in the dimension).

Selection is per sample, as the papers define it. With ``batchwise`` (the official L2P and
DualPrompt code's ``batchwise_prompt``) the whole batch takes the prompts chosen most often in it
(:func:`majority`): that uses that a batch comes from one task, and a prediction then depends on
the other samples of its batch.

A module that owns prefixes for several layers gives layer i's as ``layer_prefix(i)``, which
each prefix layer's ``models.prompts.LayerPrefix`` asks for.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.precision import fp32_region
from models.prompts import PromptSource, QueryTaker
from models.tasks import PerTaskModules
from models.transient import TransientState


def uniform(*shape: int) -> nn.Parameter:
    """A parameter drawn from U(-1, 1), the methods' default prompt and key init."""
    return nn.Parameter(torch.empty(*shape).uniform_(-1.0, 1.0))


def majority(chosen: torch.Tensor, n_choices: int) -> torch.Tensor:
    """The batch's vote: of the indices ``chosen`` (B, N) per sample, the N chosen most often,
    ties to the smaller index, for every sample (B, N)."""
    count = torch.bincount(chosen.flatten(), minlength=n_choices)
    top = torch.sort(count, descending=True, stable=True).indices[:chosen.shape[1]]
    return top.expand_as(chosen)


def cosine(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """cos(q_b, k_m) (B, M) of queries q (B, d) and keys (M, d), in fp32 even under autocast:
    both are cast to fp32 before they are normalized, so a choice by the largest similarity adds
    no bf16 rounding to that of the query (``models.prompts.query_features``)."""
    with fp32_region(q.device):
        return F.normalize(q.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T


class L2PPool(TransientState, PromptSource, QueryTaker, nn.Module):
    """L2P's prompt pool: ``size`` prompts of ``length`` tokens with keys; ``top_n`` chosen per
    sample, or by the batch's vote with ``batchwise`` (module docstring). A prompt source for
    ``models.prompts.attach_shallow_prompts``."""

    transient = ("outputs", "chosen", "_pull")
    outputs: torch.Tensor | None = None  # the prompts' outputs after the final norm (B, L, d)
    chosen: torch.Tensor | None = None  # this batch's prompt indices (B, top_n)
    _pull: torch.Tensor | None = None  # this batch's surrogate loss

    def __init__(self, size: int, length: int, top_n: int, dim: int, pull_weight: float,
                 batchwise: bool = False):
        super().__init__()
        if not 1 <= top_n <= size:
            raise ValueError(f"l2p: top_n must be in 1..{size} (the pool size), got {top_n}")
        self.pool = uniform(size, length, dim)
        self.keys = uniform(size, dim)
        self.top_n, self.pull_weight, self.batchwise = top_n, pull_weight, batchwise

    def choose(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices of the top_n keys per sample (B, N), or of the batch's vote, and their
        cosine similarities (B, N))."""
        sim = cosine(q, self.keys)
        top = sim.topk(self.top_n, dim=1).indices
        if self.batchwise:
            top = majority(top, len(self.keys))
        return top, sim.gather(1, top)

    def set_query(self, q: torch.Tensor) -> None:
        """Choose the batch's prompts; in training, keep the surrogate loss."""
        self.chosen, sim = self.choose(q)
        if self.training:
            self._pull = sim.sum(dim=1).mean()

    def prompts(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.chosen is None:
            return None
        return self.pool[self.chosen].flatten(1, 2)  # (B, N L, d)

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """-lambda (1/B) sum of the chosen keys' similarities (``models.losses``)."""
        pull, self._pull = self._pull, None
        return None if pull is None else -self.pull_weight * pull


class GeneralPrefix(nn.Module):
    """DualPrompt's general prefix: ``length`` key and value entries for each of ``n_layers``
    layers, shared by all tasks."""

    def __init__(self, n_layers: int, length: int, dim: int):
        super().__init__()
        self.prompts = uniform(n_layers, 2, length, dim)

    def layer_prefix(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prompts[layer, 0], self.prompts[layer, 1]


class Expert(nn.Module):
    """One DualPrompt expert: its prefixes (n_layers, 2, L, d) and its key (d)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.prompts = uniform(*shape)
        self.key = uniform(shape[-1])


class ExpertPrefixes(TransientState, QueryTaker, PerTaskModules):
    """DualPrompt's expert prefixes: one :class:`Expert` per task (``length`` key and value
    entries for each of ``n_layers`` layers, and a key; module docstring). The task set by
    ``set_task`` serves; set to None (no task id), each sample gets the expert its query
    chooses (with ``batchwise``, every sample the expert most of its batch chooses)."""

    infers_task = True
    transient = ("picked", "_match")
    picked: torch.Tensor | None = None  # the experts' prefixes chosen per sample (no task id)
    _match: torch.Tensor | None = None  # this batch's matching loss

    def __init__(self, n_layers: int, length: int, dim: int, match_weight: float,
                 batchwise: bool = False):
        super().__init__(partial(Expert, (n_layers, 2, length, dim)), kind="prompt")
        self.match_weight, self.batchwise = match_weight, batchwise

    @torch.no_grad()
    def add_task(self, task: int, device="cpu") -> None:
        """The task's expert: its prefixes a copy of the previous task's, its key at random."""
        earlier = list(self.per_task.values())
        super().add_task(task, device)
        if earlier:
            self.per_task[f"task_{task}"].prompts.copy_(earlier[-1].prompts)

    def tasks(self) -> list[int]:
        return [int(k.removeprefix("task_")) for k in self.per_task]

    def closest(self, q: torch.Tensor) -> torch.Tensor:
        """Per sample, the index (in :meth:`tasks` order) of the expert whose key is the most
        cosine-similar to the query (with ``batchwise``, the batch's vote)."""
        keys = torch.stack([e.key for e in self.per_task.values()])
        best = cosine(q, keys).argmax(dim=1)
        return majority(best[:, None], len(keys))[:, 0] if self.batchwise else best

    def infer_tasks(self, q: torch.Tensor) -> torch.Tensor:
        """Per sample, the task whose key is the most cosine-similar to the query."""
        return torch.tensor(self.tasks(), device=q.device)[self.closest(q)]

    def needs_query(self) -> bool:
        """The query chooses the expert (no task id) or trains its key; a given task's expert
        in evaluation needs none."""
        return self.task is None or self.training

    def set_query(self, q: torch.Tensor | None) -> None:
        """Without a task id, each sample's expert (:meth:`closest`); given a task in training,
        the matching loss of its key."""
        self.picked = None
        if self.task is None:
            if len(self.per_task):
                every = torch.stack([e.prompts for e in self.per_task.values()])
                self.picked = every[self.closest(q)]  # (B, n_layers, 2, L, d)
            return
        expert = self.current()
        if expert is not None and self.training:
            cos = cosine(q, expert.key[None])[:, 0]
            self._match = self.match_weight * (1 - cos).mean()

    def prefixes(self) -> torch.Tensor | None:
        """This forward's prefixes: the task's expert's (n_layers, 2, L, d), or per sample
        (B, n_layers, 2, L, d) without a task id; None when there is no expert."""
        if self.task is None:
            return self.picked
        expert = self.current()
        return None if expert is None else expert.prompts

    def layer_prefix(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        chosen = self.prefixes()
        if chosen is None:
            return None
        return chosen[..., layer, 0, :, :], chosen[..., layer, 1, :, :]

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """lambda (1 - cos(q, k_t)) of the last training forward (``models.losses``)."""
        match, self._match = self._match, None
        return match


def orthogonal_rows(earlier: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` random unit rows orthogonal to the rows of ``earlier`` (m, D) and to each other
    (Gram-Schmidt through a QR factorization), or random unit rows when m + n > D."""
    m, D = earlier.shape
    fresh = torch.randn(n, D).to(earlier.device)  # drawn on the CPU: the same on every device
    if m + n > D:
        return F.normalize(fresh, dim=1)
    q, _ = torch.linalg.qr(torch.cat([earlier, fresh]).T)  # (D, m + n), orthonormal columns
    return q[:, m:].T.contiguous()


class Components(nn.Module):
    """One task's CODA-Prompt components for every prefix layer: prompts (n_layers, C, L, d),
    keys and attention vectors (n_layers, C, d); filled by ``CodaPrefixes.add_task``."""

    def __init__(self, n_layers: int, count: int, length: int, dim: int):
        super().__init__()
        self.prompt = nn.Parameter(torch.zeros(n_layers, count, length, dim))
        self.key = nn.Parameter(torch.zeros(n_layers, count, dim))
        self.attention = nn.Parameter(torch.zeros(n_layers, count, dim))


class CodaPrefixes(TransientState, QueryTaker, PerTaskModules):
    """CODA-Prompt's components for ``n_layers`` prefix layers: per task ``per_task``
    :class:`Components`, each a prompt of ``length`` entries (half keys, half values), a key
    and an attention vector per layer (module docstring). Features do not depend on the task:
    every forward composes all components added so far; ``set_task`` is ignored."""

    conditions_features = False
    transient = ("composed",)
    composed: torch.Tensor | None = None  # (n_layers, B, length, d) of this batch

    def __init__(self, n_layers: int, per_task: int, length: int, dim: int):
        if length % 2:
            raise ValueError(f"coda-prompt: the prompt length must be even (half keys, half "
                             f"values), got {length}")
        super().__init__(partial(Components, n_layers, per_task, length, dim), kind="prompt")
        self.n_layers, self.per_task_count = n_layers, per_task
        self.length = length

    def stacked(self, name: str) -> torch.Tensor:
        """Every task's ``name`` tensor, concatenated over components: (n_layers, M, ...)."""
        return torch.cat([getattr(c, name) for c in self.per_task.values()], dim=1)

    @torch.no_grad()
    def add_task(self, task: int, device="cpu") -> None:
        """The task's components, each row orthogonal to the earlier tasks' (per layer)."""
        earlier = len(self.per_task)
        super().add_task(task, device)
        new = self.per_task[f"task_{task}"]
        for name in ("prompt", "key", "attention"):
            rows = self.stacked(name).flatten(2)  # (n_layers, M, width)
            fresh = torch.stack([orthogonal_rows(rows[layer, :earlier * self.per_task_count],
                                                 self.per_task_count)
                                 for layer in range(self.n_layers)])
            getattr(new, name).copy_(fresh.reshape(getattr(new, name).shape))

    def weights(self, q: torch.Tensor) -> torch.Tensor:
        """alpha (n_layers, B, M): cos(q * A_m, K_m) per layer and component, in fp32 even under
        autocast (as :func:`cosine`)."""
        with fp32_region(q.device):
            qa = F.normalize(q.float()[None, :, None, :] * self.stacked("attention")[:, None],
                             dim=-1)  # (L, B, M, d)
            return (qa * F.normalize(self.stacked("key"), dim=-1)[:, None]).sum(-1)

    def set_query(self, q: torch.Tensor) -> None:
        """Compose the batch's prompts: sum_m alpha_m P_m per layer (none before a task)."""
        if not len(self.per_task):
            self.composed = None
            return
        self.composed = torch.einsum("lbm,lmnd->lbnd", self.weights(q), self.stacked("prompt"))

    def layer_prefix(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.composed is None:
            return None
        half = self.length // 2
        p = self.composed[layer]
        return p[:, :half], p[:, half:]
