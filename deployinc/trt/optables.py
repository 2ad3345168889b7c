"""Operator-support tables used by :mod:`deployinc.trt.check`, transcribed from the projects' own documentation.

TensorRT: the ONNX-TensorRT parser's operator support matrix (``onnx-tensorrt/docs/operators.md``) for TensorRT 10.15,
which supports opsets 9 to 24. Every operator of that matrix is listed with its Y/N and the supported types. The
restrictions that the matrix documents and that matter for CNN classifiers are checked in code
(:mod:`deployinc.trt.check`), each citing the matrix's wording.

ONNX Runtime: the CPU and CUDA kernels that CNN classifiers use, with the element types their kernels register
(``onnxruntime/docs/OperatorKernels.md``). ORT's CPU provider has kernels for nearly every ``ai.onnx`` operator, so an
operator missing from these tables is reported as *unverified*, not unsupported. On the CPU, a float16 node without a
float16 kernel still runs: ORT inserts Cast nodes around it (checked with onnxruntime 1.31.1 on Conv, pooling, Gemm
and BatchNormalization), so float16 there is reported as a note, not an error.
"""

from __future__ import annotations

#: Opset range of the TensorRT matrix transcribed here.
TRT_MATRIX_VERSION = "10.15"
TRT_OPSET_MIN = 9
TRT_OPSET_MAX = 24

# "Operator Y|N types" — types as the matrix spells them.
_TRT_MATRIX = """
Abs Y FP32,FP16,BF16,INT32,INT64
Acos Y FP32,FP16,BF16
Acosh Y FP32,FP16,BF16
Add Y FP32,FP16,BF16,INT32,INT64
AffineGrid N
And Y BOOL
ArgMax Y FP32,FP16,BF16,INT32,INT64
ArgMin Y FP32,FP16,BF16,INT32,INT64
Asin Y FP32,FP16,BF16
Asinh Y FP32,FP16,BF16
Atan Y FP32,FP16,BF16
Atanh Y FP32,FP16,BF16
Attention Y FP32,FP16,BF16,INT8,FP8
AveragePool Y FP32,FP16,BF16
BatchNormalization Y FP32,FP16,BF16
Bernoulli N
BitShift N
BitwiseAnd N
BitwiseNot N
BitwiseOr N
BitwiseXor N
BlackmanWindow Y FP32,FP16
Cast Y FP32,FP16,BF16,INT32,INT64,UINT8,BOOL
CastLike Y FP32,FP16,BF16,INT32,INT64,UINT8,BOOL
Ceil Y FP32,FP16,BF16
Col2Im N
Celu Y FP32,FP16,BF16
CenterCropPad N
Clip Y FP32,FP16,BF16
Compress N
Concat Y FP32,FP16,BF16,INT32,INT64,BOOL
ConcatFromSequence N
Constant Y FP32,FP16,BF16,FP8,FP4,INT4,INT32,INT64,BOOL
ConstantOfShape Y FP32,FP16,BF16,FP8,FP4,INT4,INT32,INT64,BOOL
Conv Y FP32,FP16,BF16
ConvInteger N
ConvTranspose Y FP32,FP16,BF16
Cos Y FP32,FP16,BF16
Cosh Y FP32,FP16,BF16
CumSum Y FP32,FP16,BF16
DFT N
DeformConv Y FP32,FP16
DepthToSpace Y FP32,FP16,BF16,INT32,INT64
DequantizeLinear Y INT8,FP8,FP4,INT4
Det N
Div Y FP32,FP16,BF16,INT32,INT64
Dropout Y FP32,FP16,BF16
DynamicQuantizeLinear N
Einsum Y FP32,FP16,BF16
Elu Y FP32,FP16,BF16
Equal Y FP32,FP16,BF16,INT32,INT64
Erf Y FP32,FP16,BF16
Exp Y FP32,FP16,BF16
Expand Y FP32,FP16,BF16,INT32,INT64,BOOL
EyeLike Y FP32,FP16,BF16,INT32,INT64,BOOL
Flatten Y FP32,FP16,BF16,INT32,INT64,BOOL
Floor Y FP32,FP16,BF16
Gather Y FP32,FP16,BF16,INT32,INT64,BOOL
GatherElements Y FP32,FP16,BF16,INT32,INT64,BOOL
GatherND Y FP32,FP16,BF16,INT32,INT64,BOOL
Gelu Y FP32,FP16,BF16,INT8,INT32,INT64
Gemm Y FP32,FP16,BF16
GlobalAveragePool Y FP32,FP16,BF16
GlobalLpPool Y FP32,FP16,BF16
GlobalMaxPool Y FP32,FP16,BF16
Greater Y FP32,FP16,BF16,INT32,INT64
GreaterOrEqual Y FP32,FP16,BF16,INT32,INT64
GridSample Y FP32,FP16
GroupNormalization Y FP32,FP16,BF16
GRU Y FP32,FP16,BF16
HammingWindow Y FP32,FP16
HannWindow Y FP32,FP16
HardSigmoid Y FP32,FP16,BF16
HardSwish Y FP32,FP16,BF16
Hardmax Y FP32,FP16,BF16
Identity Y FP32,FP16,BF16,INT32,INT64,BOOL
If Y FP32,FP16,BF16,INT32,INT64,BOOL
ImageScaler Y FP32,FP16,BF16
ImageDecoder N
InstanceNormalization Y FP32,FP16,BF16
IsInf Y FP32,FP16,BF16
IsNaN Y FP32,FP16,BF16,INT32,INT64
LayerNormalization Y FP32,FP16,BF16
LeakyRelu Y FP32,FP16,BF16
Less Y FP32,FP16,BF16,INT32,INT64
LessOrEqual Y FP32,FP16,BF16,INT32,INT64
Log Y FP32,FP16,BF16
LogSoftmax Y FP32,FP16,BF16
Loop Y FP32,FP16,BF16,INT32,INT64,BOOL
LRN Y FP32,FP16,BF16
LSTM Y FP32,FP16,BF16
LpNormalization Y FP32,FP16,BF16
LpPool Y FP32,FP16,BF16
MatMul Y FP32,FP16,BF16
MatMulInteger N
Max Y FP32,FP16,BF16,INT32,INT64
MaxPool Y FP32,FP16,BF16
MaxRoiPool N
MaxUnpool N
Mean Y FP32,FP16,BF16,FP8,INT32,INT64
MeanVarianceNormalization Y FP32,FP16,BF16
MelWeightMatrix N
Min Y FP32,FP16,BF16,INT32,INT64
Mish Y FP32,FP16
Mod Y FP32,FP16,BF16,INT32,INT64
Mul Y FP32,FP16,BF16,INT32,INT64
Multinomial N
Neg Y FP32,FP16,BF16,INT32,INT64
NegativeLogLikelihoodLoss N
NonMaxSuppression Y FP32,FP16
NonZero Y FP32,FP16
Not Y BOOL
OneHot Y FP32,FP16,BF16,INT32,INT64,BOOL
Optional N
OptionalGetElement N
OptionalHasElement N
Or Y BOOL
Pad Y FP32,FP16,BF16,INT32,INT64
ParametricSoftplus Y FP32,FP16,BF16
Pow Y FP32,FP16,BF16,INT32,INT64
PRelu Y FP32,FP16,BF16
QLinearConv N
QLinearMatMul N
QuantizeLinear Y FP32,FP16,BF16
RandomNormal Y FP32,FP16,BF16
RandomNormalLike Y FP32,FP16,BF16
RandomUniform Y FP32,FP16,BF16
RandomUniformLike Y FP32,FP16,BF16
Range Y FP32,FP16,BF16,INT32,INT64
Reciprocal Y FP32,FP16,BF16
ReduceL1 Y FP32,FP16,BF16,INT32,INT64
ReduceL2 Y FP32,FP16,BF16,INT32,INT64
ReduceLogSum Y FP32,FP16,BF16,INT32,INT64
ReduceLogSumExp Y FP32,FP16,BF16,INT32,INT64
ReduceMax Y FP32,FP16,BF16,INT32,INT64
ReduceMean Y FP32,FP16,BF16,INT32,INT64
ReduceMin Y FP32,FP16,BF16,INT32,INT64
ReduceProd Y FP32,FP16,BF16,INT32,INT64
ReduceSum Y FP32,FP16,BF16,INT32,INT64
ReduceSumSquare Y FP32,FP16,BF16,INT32,INT64
RegexFullMatch N
Relu Y FP32,FP16,BF16,INT32,INT64
Reshape Y FP32,FP16,BF16,INT32,INT64,BOOL
Resize Y FP32,FP16,BF16
ReverseSequence Y FP32,FP16,BF16,INT32,INT64,BOOL
RMSNormalization Y FP32,FP16,BF16
RNN Y FP32,FP16,BF16
RoiAlign Y FP32,FP16
RotaryEmbedding Y FP32,FP16,BF16
Round Y FP32,FP16,BF16
STFT Y FP32
ScaledTanh Y FP32,FP16,BF16
Scan Y FP32,FP16,BF16
Scatter Y FP32,FP16,BF16,INT32,INT64
ScatterElements Y FP32,FP16,BF16,INT32,INT64
ScatterND Y FP32,FP16,BF16,INT32,INT64
Selu Y FP32,FP16,BF16
SequenceAt N
SequenceConstruct N
SequenceEmpty N
SequenceErase N
SequenceInsert N
SequenceLength N
SequenceMap N
Shape Y FP32,FP16,BF16,INT32,INT64,BOOL
Shrink Y FP32,FP16,BF16,INT32,INT64
Sigmoid Y FP32,FP16,BF16
Sign Y FP32,FP16,BF16,INT32,INT64
Sin Y FP32,FP16,BF16
Sinh Y FP32,FP16,BF16
Size Y FP32,FP16,BF16,INT32,INT64,BOOL
Slice Y FP32,FP16,BF16,INT32,INT64,BOOL
Softmax Y FP32,FP16,BF16
SoftmaxCrossEntropyLoss N
Softplus Y FP32,FP16,BF16
Softsign Y FP32,FP16,BF16
SpaceToDepth Y FP32,FP16,BF16,INT32,INT64
Split Y FP32,FP16,BF16,INT32,INT64,BOOL
SplitToSequence N
Sqrt Y FP32,FP16,BF16
Squeeze Y FP32,FP16,BF16,INT32,INT64,BOOL
StringConcat N
StringNormalizer N
StringSplit N
Sub Y FP32,FP16,BF16,INT32,INT64
Sum Y FP32,FP16,BF16,INT32,INT64
Tan Y FP32,FP16,BF16
Tanh Y FP32,FP16,BF16
TensorScatter Y FP32,FP16,BF16,INT32
TfIdfVectorizer N
ThresholdedRelu Y FP32,FP16,BF16
Tile Y FP32,FP16,BF16,INT32,INT64,BOOL
TopK Y FP32,FP16,BF16,INT32,INT64
Transpose Y FP32,FP16,BF16,INT32,INT64,BOOL
Trilu Y FP32,FP16,BF16,INT32,INT64,BOOL
Unique N
Unsqueeze Y FP32,FP16,BF16,INT32,INT64,BOOL
Upsample Y FP32,FP16,BF16
Where Y FP32,FP16,BF16,INT32,INT64,BOOL
Xor Y BOOL
"""


def _parse(text: str) -> dict[str, frozenset[str] | None]:
    out: dict[str, frozenset[str] | None] = {}
    for line in text.strip().splitlines():
        parts = line.split()
        op, flag = parts[0], parts[1]
        if flag == "Y":
            out[op] = frozenset(parts[2].split(",")) if len(parts) > 2 else frozenset()
        else:
            out[op] = None
    return out


#: op -> supported type names, or None where the matrix says N.
TRT_OPS: dict[str, frozenset[str] | None] = _parse(_TRT_MATRIX)

# ONNX Runtime ---------------------------------------------------------------------------------------------------
# Element types of the kernels (first input), for the operators CNN classifiers use. FP16 on the CPU where the
# kernel is float-only still runs through inserted Casts (see the module docstring).
_F = frozenset({"FP32"})
_FD = frozenset({"FP32", "DOUBLE"})
_FH = frozenset({"FP32", "FP16"})
_FHD = frozenset({"FP32", "FP16", "DOUBLE"})
_FHDB = frozenset({"FP32", "FP16", "DOUBLE", "BF16"})
_ANY = frozenset()  # no type check: shape/data-movement kernels registered for every tensor type

ORT_CPU_OPS: dict[str, frozenset[str]] = {
    "Conv": _F, "ConvTranspose": _F, "BatchNormalization": _FD, "Gemm": _FD, "MatMul": _FD,
    "MaxPool": _FD, "AveragePool": _F, "GlobalAveragePool": _F, "GlobalMaxPool": _F, "LpPool": _F, "LRN": _F,
    "InstanceNormalization": _F, "LayerNormalization": _FD,
    "Relu": _FD, "LeakyRelu": _FD, "PRelu": _F, "Elu": _F, "Selu": _F, "Sigmoid": _FD, "HardSigmoid": _F,
    "HardSwish": _F, "Tanh": _FD, "Softmax": _FD, "LogSoftmax": _FD, "Softplus": _F, "Clip": _FD, "Erf": _F,
    "Gelu": _F, "Mish": _F,
    "Add": _FD, "Sub": _FD, "Mul": _FD, "Div": _FD, "Sum": _FD, "Max": _FD, "Min": _FD, "Mean": _FD, "Pow": _FD,
    "Sqrt": _FD, "Exp": _FD, "Log": _FD, "Abs": _FD, "Neg": _FD, "Reciprocal": _FD, "Floor": _FD, "Ceil": _FD,
    "Round": _FD, "ReduceMean": _FD, "ReduceMax": _FD, "ReduceMin": _FD, "ReduceSum": _FD,
    "Concat": _ANY, "Split": _ANY, "Slice": _ANY, "Reshape": _ANY, "Flatten": _ANY, "Squeeze": _ANY,
    "Unsqueeze": _ANY, "Transpose": _ANY, "Gather": _ANY, "Expand": _ANY, "Tile": _ANY, "Pad": _ANY,
    "Shape": _ANY, "Size": _ANY, "Cast": _ANY, "Identity": _ANY, "Dropout": _ANY, "Constant": _ANY,
    "ConstantOfShape": _ANY, "Resize": _ANY, "Upsample": _ANY, "Where": _ANY, "Equal": _ANY, "Range": _ANY,
    "ArgMax": _ANY, "TopK": _ANY, "QuantizeLinear": _ANY, "DequantizeLinear": _ANY, "DepthToSpace": _ANY,
    "SpaceToDepth": _ANY, "Einsum": _ANY, "CumSum": _ANY, "Greater": _ANY, "Less": _ANY, "Not": _ANY,
}

ORT_CUDA_OPS: dict[str, frozenset[str]] = {
    "Conv": _FHDB, "ConvTranspose": _FHDB, "BatchNormalization": _FHDB, "Gemm": _FHDB, "MatMul": _FHDB,
    "MaxPool": _FHD, "AveragePool": _FHD, "GlobalAveragePool": _FHD, "GlobalMaxPool": _FHD, "LRN": _FHD,
    "InstanceNormalization": _FHD, "LayerNormalization": _FHDB,
    "Relu": _FHDB, "LeakyRelu": _FHD, "PRelu": _FHD, "Elu": _FHD, "Selu": _FHD, "Sigmoid": _FHDB,
    "HardSigmoid": _FHD, "HardSwish": _FHDB, "Tanh": _FHDB, "Softmax": _FHDB, "LogSoftmax": _FHD,
    "Softplus": _FHD, "Clip": _FHD, "Erf": _FHDB,
    "Add": _FHDB, "Sub": _FHDB, "Mul": _FHDB, "Div": _FHDB, "Sum": _FHDB, "Max": _FHDB, "Min": _FHDB,
    "Mean": _FHD, "Pow": _FHD, "Sqrt": _FHDB, "Exp": _FHDB, "Log": _FHDB, "Abs": _FHDB, "Neg": _FHD,
    "Reciprocal": _FHD, "Floor": _FHDB, "Ceil": _FHDB, "Round": _FHD, "ReduceMean": _FHDB, "ReduceMax": _FHDB,
    "ReduceMin": _FHDB, "ReduceSum": _FHDB,
    "Concat": _ANY, "Split": _ANY, "Slice": _ANY, "Reshape": _ANY, "Flatten": _ANY, "Squeeze": _ANY,
    "Unsqueeze": _ANY, "Transpose": _ANY, "Gather": _ANY, "Expand": _ANY, "Tile": _ANY, "Pad": _ANY,
    "Shape": _ANY, "Size": _ANY, "Cast": _ANY, "Identity": _ANY, "Dropout": _ANY, "Constant": _ANY,
    "ConstantOfShape": _ANY, "Resize": _ANY, "Upsample": _ANY, "Where": _ANY, "Equal": _ANY, "Range": _ANY,
    "ArgMax": _ANY, "TopK": _ANY, "QuantizeLinear": _ANY, "DequantizeLinear": _ANY, "DepthToSpace": _ANY,
    "SpaceToDepth": _ANY, "Einsum": _ANY, "CumSum": _ANY, "Greater": _ANY, "Less": _ANY, "Not": _ANY,
}

#: Highest ONNX IR version onnxruntime-gpu 1.31 loads (measured: IR 14 is refused at session creation).
ORT_MAX_IR_VERSION = 13
