//! The gRPC services. Each RPC capsa-cri serves is an inherent method of [`Daemon`] taking
//! the request message and returning the response message; the trait impls below only
//! unwrap and wrap. Every RPC of CRI v1 as k8s-cri 0.11 has it is served.

use crate::daemon::Daemon;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The RuntimeService and ImageService of one daemon.
#[derive(Clone)]
pub struct Services(pub Arc<Daemon>);

/// Writes the trait impl: each RPC calls the daemon's method of the same name.
macro_rules! service {
    (
        impl $trait:ident {
            $(type $assoc:ident = $assoc_ty:ty;)*
            served { $($s:ident($sreq:ident) -> $sresp:ty;)* }
        }
    ) => {
        #[tonic::async_trait]
        impl $trait for Services {
            $(type $assoc = $assoc_ty;)*
            $(
                async fn $s(&self, r: Request<$sreq>) -> Result<Response<$sresp>, Status> {
                    self.0.$s(r.into_inner()).await.map(Response::new)
                }
            )*
        }
    };
}

type EventStream = crate::events::EventStream;

service! {
    impl RuntimeService {
        type GetContainerEventsStream = EventStream;
        served {
            version(VersionRequest) -> VersionResponse;
            status(StatusRequest) -> StatusResponse;
            runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
            update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
            run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
            stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
            remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
            pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
            list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
            pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
            list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
            create_container(CreateContainerRequest) -> CreateContainerResponse;
            start_container(StartContainerRequest) -> StartContainerResponse;
            stop_container(StopContainerRequest) -> StopContainerResponse;
            remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
            list_containers(ListContainersRequest) -> ListContainersResponse;
            container_status(ContainerStatusRequest) -> ContainerStatusResponse;
            update_container_resources(UpdateContainerResourcesRequest)
                -> UpdateContainerResourcesResponse;
            reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
            container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
            list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
            exec_sync(ExecSyncRequest) -> ExecSyncResponse;
            exec(ExecRequest) -> ExecResponse;
            attach(AttachRequest) -> AttachResponse;
            port_forward(PortForwardRequest) -> PortForwardResponse;
            get_container_events(GetEventsRequest) -> EventStream;
            checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
            list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
            list_pod_sandbox_metrics(ListPodSandboxMetricsRequest)
                -> ListPodSandboxMetricsResponse;
        }
    }
}

service! {
    impl ImageService {
        served {
            list_images(ListImagesRequest) -> ListImagesResponse;
            image_status(ImageStatusRequest) -> ImageStatusResponse;
            pull_image(PullImageRequest) -> PullImageResponse;
            remove_image(RemoveImageRequest) -> RemoveImageResponse;
            image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
        }
    }
}
