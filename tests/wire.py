"""A pure-PyTorch reference of the compressed deltas' wire format (csrc/codec.h): encoding,
decoding and the sums of several ranks' buffers, for every codec. The rules are exact (float32
arithmetic, one rounding per operation), so the kernels must agree with it on every bit."""

import torch

from hvd_hier.comm.extension import extension

C = extension()
CHUNK = C.CODEC_CHUNK
WIRE = {"fp16": torch.float16, "bf16": torch.bfloat16}
HEADER = 16
LEVELS = {"int8": 127.0, "int4": 7.0}
PER_BYTE = {"int8": 1, "int4": 2, "int2": 4}  # codes per byte
INT2_UNITS = 2.0 ** 20
INT2_MEAN_FACTOR = 0.625


def f32(v):
    return torch.tensor(v, dtype=torch.float32)


def chunked(v):
    """v (float32, n) as [records, CHUNK], zero-padded, and the mask of real elements."""
    records = -(-v.numel() // CHUNK)
    out = torch.zeros(records * CHUNK, dtype=torch.float32)
    out[:v.numel()] = v
    real = torch.zeros(records * CHUNK, dtype=torch.bool)
    real[:v.numel()] = True
    return out.reshape(records, CHUNK), real.reshape(records, CHUNK)


def scales(codec, rows, real):
    """(scale, inv) per row (float32)."""
    amax = rows.abs().amax(dim=1) if rows.numel() else torch.zeros(0)
    if codec in LEVELS:
        scale = amax / f32(LEVELS[codec])
    else:  # int2: 0.625 * mean |v|, the mean counted in units of 2^-20 of amax
        finite = torch.isfinite(amax)
        ia = torch.where((amax > 0) & finite, f32(1.0) / amax, f32(0.0))
        ia = torch.where(torch.isinf(ia), f32(0.0), ia)
        t = torch.minimum(rows.abs() * ia[:, None], f32(1.0))
        units = torch.where(real, torch.floor(t * f32(INT2_UNITS)), f32(0.0)).to(torch.int64).sum(1)
        n = real.sum(1).to(torch.float32)
        mean = (units.to(torch.float32) / (n * f32(INT2_UNITS))) * amax
        scale = mean * f32(INT2_MEAN_FACTOR)
        scale = torch.where(ia > 0, scale, f32(0.0))
        scale = torch.where(finite, scale, f32(float("nan")))
    inv = torch.where(scale > 0, f32(1.0) / scale, f32(0.0))
    return scale, inv


def codes_of(codec, rows, inv):
    """The integer codes (q for int8 and int4, c for int2) of every value."""
    t = rows * inv[:, None]
    if codec in LEVELS:
        q = torch.round(t).clamp(-LEVELS[codec], LEVELS[codec])  # torch.round: half to even
        return torch.where(torch.isnan(q), f32(0.0), q).to(torch.int64)
    c = torch.zeros_like(t, dtype=torch.int64)
    c = torch.where(t >= -2, 1, c)
    c = torch.where(t >= 0, 2, c)
    return torch.where(t >= 2, 3, c)


def values_of(codec, codes, scale):
    """The decoded values of integer codes."""
    level = (2 * codes - 3) if codec == "int2" else codes
    return level.to(torch.float32) * scale[:, None]


def pack(codec, codes, real):
    """The code bytes of each record: codes past the data are zero bits."""
    codes = torch.where(real, codes, 0)
    if codec == "int8":
        return codes.to(torch.int8).view(torch.uint8)
    per, bits = PER_BYTE[codec], 8 // PER_BYTE[codec]
    fields = (codes & ((1 << bits) - 1)).reshape(codes.shape[0], CHUNK // per, per)
    byte = sum(fields[:, :, u] << (bits * u) for u in range(per))
    return byte.to(torch.uint8)


def unpack(codec, body):
    """The integer codes of each record's code bytes."""
    if codec == "int8":
        return body.view(torch.int8).to(torch.int64)
    per, bits = PER_BYTE[codec], 8 // PER_BYTE[codec]
    b = body.to(torch.int64)
    fields = torch.stack([(b >> (bits * u)) & ((1 << bits) - 1) for u in range(per)], dim=2)
    codes = fields.reshape(body.shape[0], CHUNK)
    return torch.where(codes >= 8, codes - 16, codes) if codec == "int4" else codes


def ref_encode(v, codec):
    """The encoded buffer of the float32 values v and their decoding (n values)."""
    n = v.numel()
    rows, real = chunked(v)
    if codec in WIRE:
        q = rows.to(WIRE[codec])
        return q.view(torch.uint8).reshape(-1), q.to(torch.float32).reshape(-1)[:n]
    scale, inv = scales(codec, rows, real)
    codes = codes_of(codec, rows, inv)
    header = torch.zeros(rows.shape[0], HEADER, dtype=torch.uint8)
    header[:, :4] = scale.reshape(-1, 1).view(torch.uint8)
    buf = torch.cat([header, pack(codec, codes, real)], dim=1).reshape(-1)
    return buf, values_of(codec, codes, scale).reshape(-1)[:n]


def ref_decode(buf, codec, n):
    """Decoded float32 values of an encoded buffer (first n)."""
    if codec in WIRE:
        return buf.view(WIRE[codec]).to(torch.float32)[:n]
    rec = buf.reshape(-1, C.codec_record_bytes(codec))
    scale = rec[:, :4].contiguous().view(torch.float32).reshape(-1)
    return values_of(codec, unpack(codec, rec[:, HEADER:].contiguous()), scale).reshape(-1)[:n]


def ref_sum(src, codec, count, n, scale):
    """(sum over k in order of decode(src_k)) * scale, float32, n values."""
    per = src.numel() // count
    s = ref_decode(src[:per], codec, n)
    for k in range(1, count):
        s = s + ref_decode(src[k * per:(k + 1) * per], codec, n)
    return s * f32(scale)


def ref_reduce(src, codec, count, scale):
    per = src.numel() // count
    m = ref_sum(src, codec, count, per // C.codec_record_bytes(codec) * CHUNK, scale)
    m = torch.where(m == 0, f32(0.0), m)  # +0, so that padding stays zero bits
    return ref_encode(m, codec)[0]


# ---- top-k (csrc/topk.h) -------------------------------------------------------------------------

def topk_record_bytes(slots, values):
    raw = HEADER + 2 * slots + -(-slots // PER_BYTE[values])
    return -(-raw // 16) * 16


def pack_slots(values, codes, slots):
    """The code bytes of one record's slots (codes: the m kept ones; the rest zero bits)."""
    per = PER_BYTE[values]
    padded = torch.zeros(-(-slots // per) * per, dtype=torch.int64)
    padded[:codes.numel()] = codes
    if values == "int8":
        return padded.to(torch.int8).view(torch.uint8)
    bits = 8 // per
    fields = (padded & ((1 << bits) - 1)).reshape(-1, per)
    return sum(fields[:, u] << (bits * u) for u in range(per)).to(torch.uint8)


def ref_topk_encode(v, slots, values):
    """(the top-k encoding of the float32 values v, what is left of v: the residuals)."""
    out, rest = [], v.clone()
    for begin in range(0, v.numel(), CHUNK):
        chunk = v[begin:begin + CHUNK]
        keys = (chunk.view(torch.int32).to(torch.int64) & 0x7FFFFFFF)
        m = min(slots, chunk.numel())
        # the largest keys, ties broken by the lower index; offsets ascending
        order = sorted(range(chunk.numel()), key=lambda j: (-int(keys[j]), j))
        kept = torch.tensor(sorted(order[:m]), dtype=torch.int64)
        vals = chunk[kept].reshape(1, -1)
        scale, inv = scales(values, vals, torch.ones_like(vals, dtype=torch.bool))
        codes = codes_of(values, vals, inv).reshape(-1)
        rest[begin + kept] = chunk[kept] - values_of(values, codes.reshape(1, -1), scale).reshape(-1)
        rec = torch.zeros(topk_record_bytes(slots, values), dtype=torch.uint8)
        rec[:4] = scale.view(torch.uint8)
        rec[4:8] = torch.tensor([m], dtype=torch.int32).view(torch.uint8)
        offs = torch.zeros(slots, dtype=torch.int16)
        offs[:m] = kept.to(torch.int16)
        rec[HEADER:HEADER + 2 * slots] = offs.view(torch.uint8)
        body = pack_slots(values, codes, slots)
        rec[HEADER + 2 * slots:HEADER + 2 * slots + body.numel()] = body
        out.append(rec)
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.uint8)), rest


def ref_topk_sum(src, count, n, slots, values, scale):
    """(0 + each rank's kept values added in rank order) * scale, float32, n values."""
    rb = topk_record_bytes(slots, values)
    records = -(-n // CHUNK)
    s = torch.zeros(records * CHUNK, dtype=torch.float32)
    for r in range(count):
        for c in range(records):
            rec = src[(r * records + c) * rb:(r * records + c + 1) * rb]
            m = int(rec[4:8].contiguous().view(torch.int32))
            scale_c = rec[:4].contiguous().view(torch.float32)
            offs = rec[HEADER:HEADER + 2 * slots].contiguous().view(torch.int16).to(torch.int64)[:m]
            body = rec[HEADER + 2 * slots:].contiguous()
            codes = unpack_slots(values, body)[:m]
            s[c * CHUNK + offs] = s[c * CHUNK + offs] + values_of(
                values, codes.reshape(1, -1), scale_c).reshape(-1)
    return s[:n] * f32(scale)


def unpack_slots(values, body):
    if values == "int8":
        return body.view(torch.int8).to(torch.int64)
    per, bits = PER_BYTE[values], 8 // PER_BYTE[values]
    b = body.to(torch.int64)
    codes = torch.stack([(b >> (bits * u)) & ((1 << bits) - 1) for u in range(per)], dim=1).reshape(-1)
    return torch.where(codes >= 8, codes - 16, codes) if values == "int4" else codes
