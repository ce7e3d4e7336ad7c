from proto import codegen, recall_pb2, recall_pb2_grpc


def test_generated_stubs_match_proto_source():
    assert not codegen.is_stale()
    assert codegen.STAMP.read_text().strip() == codegen.source_digest()


def test_service_shape_follows_contract():
    service = recall_pb2.DESCRIPTOR.services_by_name["RecallService"]
    assert recall_pb2.DESCRIPTOR.package == "i2i.v1"
    method = service.methods_by_name["Recall"]
    assert method.input_type.name == "RecallRequest" and method.output_type.name == "RecallResponse"
    request_fields = set(recall_pb2.RecallRequest.DESCRIPTOR.fields_by_name)
    assert request_fields == {"user_id", "history", "k", "per_query_k", "exclude_history"}
    assert not recall_pb2.RecallRequest().HasField("exclude_history")
    response_fields = set(recall_pb2.RecallResponse.DESCRIPTOR.fields_by_name)
    assert response_fields == {"notes", "index_version", "model_version", "missing_history"}
    assert hasattr(recall_pb2_grpc, "RecallServiceStub")
