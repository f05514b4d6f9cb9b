//! Gathers and scatters of column groups (a coupling layer's partition of the sites), the
//! per-site interleaving of several nodes' columns, and rows of parameters picked by an
//! index table.

use std::sync::Arc;

use super::{Backward, Op, Real, Tape, Var};

/// A gather or scatter node.
pub(super) enum IndexOp {
    Gather {
        x: usize,
        cols: Arc<[usize]>,
        group: usize,
    },
    Scatter {
        base: usize,
        src: usize,
        cols: Arc<[usize]>,
        group: usize,
    },
    /// A row of parameters picked by an index table.
    Params { offset: usize, index: Arc<[u32]> },
    /// The inputs are `group_ids[first..first + count]`.
    Interleave {
        first: usize,
        count: usize,
        sites: usize,
    },
}

impl<T: Real> Tape<T> {
    /// Picks column groups: `out[:, j*group + c] = x[:, cols[j]*group + c]`.
    pub fn gather(&mut self, x: Var, cols: &Arc<[usize]>, group: usize) -> Var {
        let (n, m) = self.shape(x);
        assert!(
            cols.iter().all(|&c| (c + 1) * group <= m),
            "gather: column out of range"
        );
        let ng = self.needs(x.0);
        let op = Op::Index(IndexOp::Gather {
            x: x.0,
            cols: cols.clone(),
            group,
        });
        let i = self.push(op, (n, cols.len() * group), ng);
        let (prev, node) = self.split(i);
        for (xr, mut yr) in prev[x.0]
            .value
            .outer_iter()
            .zip(node.value.outer_iter_mut())
        {
            let xr = xr.as_slice().expect("standard layout");
            let yr = yr.as_slice_mut().expect("standard layout");
            if group == 1 {
                // Single columns: element moves, not a copy call per element.
                for (y, &c) in yr.iter_mut().zip(cols.iter()) {
                    *y = xr[c];
                }
                continue;
            }
            for (yg, &c) in yr.chunks_exact_mut(group).zip(cols.iter()) {
                yg.copy_from_slice(&xr[c * group..(c + 1) * group]);
            }
        }
        Var(i)
    }

    /// `base` with column groups replaced: `out[:, cols[j]*group + c] = src[:, j*group + c]`
    /// (the columns in `cols` must be distinct).
    pub fn scatter(&mut self, base: Var, src: Var, cols: &Arc<[usize]>, group: usize) -> Var {
        let (n, m) = self.shape(base);
        assert_eq!(
            self.shape(src),
            (n, cols.len() * group),
            "scatter: source shape"
        );
        assert!(
            cols.iter().all(|&c| (c + 1) * group <= m),
            "scatter: column out of range"
        );
        let ng = self.needs(base.0) || self.needs(src.0);
        let op = Op::Index(IndexOp::Scatter {
            base: base.0,
            src: src.0,
            cols: cols.clone(),
            group,
        });
        let i = self.push(op, (n, m), ng);
        let (prev, node) = self.split(i);
        node.value.assign(&prev[base.0].value);
        for (sr, mut yr) in prev[src.0]
            .value
            .outer_iter()
            .zip(node.value.outer_iter_mut())
        {
            let sr = sr.as_slice().expect("standard layout");
            let yr = yr.as_slice_mut().expect("standard layout");
            if group == 1 {
                for (&x, &c) in sr.iter().zip(cols.iter()) {
                    yr[c] = x;
                }
                continue;
            }
            for (sg, &c) in sr.chunks_exact(group).zip(cols.iter()) {
                yr[c * group..(c + 1) * group].copy_from_slice(sg);
            }
        }
        Var(i)
    }

    /// Per-site concatenation: inputs `[n, sites * k_i]` give `[n, sites * Σk_i]` with the
    /// `k_i` numbers of input i for site s at `s * Σk + Σ_{j<i} k_j`.
    pub fn interleave(&mut self, inputs: &[Var], sites: usize) -> Var {
        assert!(!inputs.is_empty() && sites > 0, "interleave: no input");
        let n = self.shape(inputs[0]).0;
        let mut total = 0;
        for &v in inputs {
            let (r, c) = self.shape(v);
            assert!(r == n && c.is_multiple_of(sites), "interleave: input shape");
            total += c / sites;
        }
        let ng = inputs.iter().any(|v| self.needs(v.0));
        let first = self.group_ids.len();
        self.group_ids.extend(inputs.iter().map(|v| v.0));
        let op = Op::Index(IndexOp::Interleave {
            first,
            count: inputs.len(),
            sites,
        });
        let i = self.push(op, (n, sites * total), ng);
        let (prev, rest) = self.nodes.split_at_mut(i);
        let node = &mut rest[0];
        let mut offset = 0;
        for &id in &self.group_ids[first..first + inputs.len()] {
            let k = prev[id].value.ncols() / sites;
            for (xr, mut yr) in prev[id].value.outer_iter().zip(node.value.outer_iter_mut()) {
                let xr = xr.as_slice().expect("standard layout");
                let yr = yr.as_slice_mut().expect("standard layout");
                if k == 1 {
                    for (y, &x) in yr[offset..].iter_mut().step_by(total).zip(xr) {
                        *y = x;
                    }
                    continue;
                }
                for (s, xg) in xr.chunks_exact(k).enumerate() {
                    let at = s * total + offset;
                    yr[at..at + k].copy_from_slice(xg);
                }
            }
            offset += k;
        }
        Var(i)
    }
}

impl<T: Real> Tape<T> {
    /// A `[1, m]` row of parameters picked by an index table:
    /// `out[0, j] = params[offset + index[j]]` (a parameter may be picked many times; its
    /// gradient is the sum over its places).
    pub fn param_gather(&mut self, params: &[T], offset: usize, index: &Arc<[u32]>) -> Var {
        let op = Op::Index(IndexOp::Params {
            offset,
            index: index.clone(),
        });
        let i = self.push(op, (1, index.len()), true);
        for (y, &k) in self.nodes[i].value.iter_mut().zip(index.iter()) {
            *y = params[offset + k as usize];
        }
        Var(i)
    }
}

impl IndexOp {
    pub(super) fn backward<T: Real>(&self, ctx: &mut Backward<'_, T>) {
        let g = ctx.grad;
        match self {
            IndexOp::Gather { x, cols, group } => {
                let group = *group;
                for (gr, mut gxr) in g.outer_iter().zip(ctx.prev[*x].grad.outer_iter_mut()) {
                    let gr = gr.as_slice().expect("standard layout");
                    let gxr = gxr.as_slice_mut().expect("standard layout");
                    for (gg, &c) in gr.chunks_exact(group).zip(cols.iter()) {
                        for (gx, &g) in gxr[c * group..(c + 1) * group].iter_mut().zip(gg) {
                            *gx = *gx + g;
                        }
                    }
                }
            }
            IndexOp::Scatter {
                base,
                src,
                cols,
                group,
            } => {
                let group = *group;
                let prev = &mut *ctx.prev;
                if prev[*src].needs_grad {
                    for (gr, mut gsr) in g.outer_iter().zip(prev[*src].grad.outer_iter_mut()) {
                        let gr = gr.as_slice().expect("standard layout");
                        let gsr = gsr.as_slice_mut().expect("standard layout");
                        for (gs, &c) in gsr.chunks_exact_mut(group).zip(cols.iter()) {
                            for (s, &g) in gs.iter_mut().zip(&gr[c * group..(c + 1) * group]) {
                                *s = *s + g;
                            }
                        }
                    }
                }
                if prev[*base].needs_grad {
                    let m = g.ncols();
                    let mask = &mut *ctx.mask;
                    mask.clear();
                    mask.resize(m, true);
                    for &c in cols.iter() {
                        mask[c * group..(c + 1) * group].fill(false);
                    }
                    for (gr, mut gbr) in g.outer_iter().zip(prev[*base].grad.outer_iter_mut()) {
                        for ((gb, &g), &keep) in gbr.iter_mut().zip(gr.iter()).zip(mask.iter()) {
                            if keep {
                                *gb = *gb + g;
                            }
                        }
                    }
                }
            }
            IndexOp::Params { offset, index } => {
                if let Some(param_grad) = ctx.param_grad.as_deref_mut() {
                    for (&g, &k) in g.iter().zip(index.iter()) {
                        let p = &mut param_grad[offset + k as usize];
                        *p = *p + g;
                    }
                }
            }
            IndexOp::Interleave {
                first,
                count,
                sites,
            } => {
                let ids = &ctx.group_ids[*first..*first + *count];
                let sum_k = g.ncols() / *sites;
                let mut offset = 0;
                for &id in ids {
                    let node = &mut ctx.prev[id];
                    let k = node.value.ncols() / *sites;
                    if node.needs_grad {
                        for (gr, mut gxr) in g.outer_iter().zip(node.grad.outer_iter_mut()) {
                            let gr = gr.as_slice().expect("standard layout");
                            let gxr = gxr.as_slice_mut().expect("standard layout");
                            for (s, gxg) in gxr.chunks_exact_mut(k).enumerate() {
                                let at = s * sum_k + offset;
                                for (gx, &g) in gxg.iter_mut().zip(&gr[at..at + k]) {
                                    *gx = *gx + g;
                                }
                            }
                        }
                    }
                    offset += k;
                }
            }
        }
    }
}
