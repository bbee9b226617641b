"""A RecBole model wrapper whose ``full_sort_predict`` returns prior-fused scores.

Use it to score the fusion with RecBole's own evaluator (``trainer.evaluate``), or to
serve a trained RecBole model with a category prior. Normalization runs per user over the
whole catalogue ([PAD] excluded), so ``predict`` (sampled evaluation) gathers from the
same fused row and both evaluation modes rank identically.
"""

from __future__ import annotations

import numpy as np

from fusion.blend import affinity, check_w, get_fusion_rule, get_normalization


def _torch_module():
    import torch

    return torch.nn.Module


class FusedRecBoleModel(_torch_module()):
    """A registered fusion rule of (model scores, prior affinity) behind RecBole's model interface.

    The default rule, ``linear``, is ``(1-w) * norm(model scores) + w * norm(prior affinity)``.
    """

    def __init__(self, model, rdataset, prior_table, dataset, w: float, normalization: str = "minmax",
                 rule: str = "linear"):
        """``rdataset``: the RecBole dataset the model was trained on; ``dataset``: our Dataset (ids, membership);
        ``rule``: a name in :data:`fusion.blend.FUSION_RULES`."""
        super().__init__()
        import torch

        self.model = model
        self.w = check_w(w)
        self.normalization = normalization
        get_normalization(normalization)
        self.rule = rule
        self._fuse = get_fusion_rule(rule)
        self.USER_ID = model.USER_ID
        self.ITEM_ID = model.ITEM_ID
        self.ITEM_SEQ = getattr(model, "ITEM_SEQ", None)
        self.n_items = model.n_items
        self.device = model.device

        # category membership in RecBole's internal item order ([PAD] = row 0 stays zero)
        rb_item_tokens = rdataset.field2id_token[rdataset.iid_field]
        M = np.zeros((len(rb_item_tokens), dataset.K))
        known = rb_item_tokens[1:]
        M[1:] = dataset.membership[dataset.item_index(known)].toarray()
        # prior rows in RecBole's internal user order (users without a row get uniform)
        rb_user_tokens = rdataset.field2id_token[rdataset.uid_field]
        P = np.full((len(rb_user_tokens), dataset.K), 1.0 / dataset.K)
        known = dataset.has_users(rb_user_tokens)
        known[0] = False  # [PAD]
        rows = np.flatnonzero(known)
        P[rows] = prior_table.matrix(dataset, dataset.user_index(rb_user_tokens[rows]))
        self.register_buffer("membership", torch.as_tensor(M, dtype=torch.float64), persistent=False)
        self.register_buffer("prior", torch.as_tensor(P, dtype=torch.float64), persistent=False)

    def _fused(self, interaction, base):
        import torch

        users = interaction[self.USER_ID].long().cpu().numpy()
        base = base.detach().double().cpu().numpy().reshape(len(users), -1)
        items = np.broadcast_to(np.arange(base.shape[1]), base.shape)
        mask = items > 0  # column 0 is RecBole's [PAD]
        aff = affinity(self.prior[users].numpy(), self.membership.numpy(), np.where(mask, items, -1))
        fused = self._fuse(base, aff, self.w, mask, self.normalization)
        return torch.as_tensor(fused, dtype=torch.float32, device=self.device)

    def full_sort_predict(self, interaction):
        """Fused scores over all items: (batch, n_items), column 0 ([PAD]) = -inf."""
        return self._fused(interaction, self.model.full_sort_predict(interaction))

    def predict(self, interaction):
        """Fused score of each (user, item) pair, gathered from the full fused row."""
        import torch

        full = self.full_sort_predict(interaction)
        items = interaction[self.ITEM_ID].long().to(full.device)
        return full[torch.arange(len(items), device=full.device), items]

    def calculate_loss(self, interaction):
        raise RuntimeError("FusedRecBoleModel is for evaluation and serving; train the wrapped model instead")

    def forward(self, *args, **kwargs):
        return self.model.forward(*args, **kwargs)
