"""Parameter shapes of common models, written out (no model is downloaded or built)."""


def _bn(c):
    return [(c,), (c,)]  # weight, bias


def resnet(depth):
    """torchvision's ImageNet ResNet-18 or ResNet-50 parameter shapes, in model order."""
    bottleneck = depth == 50
    blocks = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
    shapes = [(64, 3, 7, 7)] + _bn(64)
    inplanes = 64
    for stage, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks)):
        out = planes * (4 if bottleneck else 1)
        for b in range(n):
            if bottleneck:
                shapes += [(planes, inplanes, 1, 1)] + _bn(planes)
                shapes += [(planes, planes, 3, 3)] + _bn(planes)
                shapes += [(out, planes, 1, 1)] + _bn(out)
            else:
                shapes += [(planes, inplanes, 3, 3)] + _bn(planes)
                shapes += [(planes, planes, 3, 3)] + _bn(planes)
            if b == 0 and (stage > 0 or inplanes != out):
                shapes += [(out, inplanes, 1, 1)] + _bn(out)
            inplanes = out
    shapes += [(1000, inplanes), (1000,)]
    return shapes


def transformer_block(d=1024, ffn=4096):
    """One pre-norm transformer encoder block: attention (fused QKV), MLP, two LayerNorms."""
    return [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,),
            (d,), (d,), (ffn, d), (ffn,), (d, ffn), (d,)]


MODELS = {
    "resnet18": resnet(18),
    "resnet50": resnet(50),
    "transformer_block": transformer_block(),
}


def numel(shapes):
    total = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        total += n
    return total
