import importlib.util
from pathlib import Path

from recall_server.stubs import recall_pb2, recall_pb2_grpc

CODEGEN = Path(__file__).resolve().parents[2] / "proto" / "codegen.py"


def load_codegen():
    spec = importlib.util.spec_from_file_location("codegen_under_test", CODEGEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_match_proto_source():
    codegen = load_codegen()
    assert not codegen.is_stale()
    assert codegen.STAMP.read_text().strip() == codegen.source_digest()
    assert Path(recall_pb2.__file__).parent == codegen.GENERATED / "i2i" / "v1"


def test_stubs_do_not_shadow_other_packages():
    import proto  # proto-plus, a dependency of Beam's cloud connectors, keeps its name

    assert not hasattr(proto, "recall_pb2")


def test_service_shape_follows_contract():
    service = recall_pb2.DESCRIPTOR.services_by_name["RecallService"]
    assert recall_pb2.DESCRIPTOR.package == "i2i.v1"
    method = service.methods_by_name["Recall"]
    assert method.input_type.name == "RecallRequest" and method.output_type.name == "RecallResponse"
    numbers = {name: field.number for name, field in recall_pb2.RecallRequest.DESCRIPTOR.fields_by_name.items()}
    # The contract's fields keep their numbers; the request options (docs/recall-server.md) follow them.
    assert numbers == {"user_id": 1, "history": 2, "k": 3, "per_query_k": 4, "exclude_history": 5,
                       "nprobe": 6, "exclude": 7, "published_after": 8}
    assert not recall_pb2.RecallRequest().HasField("exclude_history")
    response_fields = set(recall_pb2.RecallResponse.DESCRIPTOR.fields_by_name)
    assert response_fields == {"notes", "index_version", "model_version", "missing_history"}
    assert hasattr(recall_pb2_grpc, "RecallServiceStub")
