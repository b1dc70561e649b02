//! A real S3-protocol server for the tests, in process on 127.0.0.1:0: `s3s` serving the
//! `s3s-fs` file-system backend (each folder under the root is a bucket, each object a file at
//! its key), with SigV4 authentication.
//!
//! `AtomicFs` wraps `s3s_fs::FileSystem` and serialises the mutating calls: s3s-fs checks
//! `If-None-Match: *` / `If-Match` and then writes, so two racing conditional puts could both
//! win there, where S3 itself lets exactly one through (as the lock race test requires).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::sync::Mutex;

pub const ACCESS_KEY: &str = "it-access-key";
/// Distinctive, so the tests can check it never reaches a log.
pub const SECRET_KEY: &str = "it-secret-key-never-log-me";
pub const BUCKET: &str = "lakehouse";

struct AtomicFs {
    inner: s3s_fs::FileSystem,
    writes: Mutex<()>,
    log: RequestLog,
}

/// Every request served: the operation, and for listings the prefix.
pub type RequestLog = Arc<std::sync::Mutex<Vec<String>>>;

impl AtomicFs {
    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }
}

// The methods object_store calls; every other S3 call answers NotImplemented (the trait's
// default). Reads pass through; writes go one at a time.
#[async_trait::async_trait]
impl S3 for AtomicFs {
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.note("get_object".to_string());
        self.inner.get_object(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.note("head_object".to_string());
        self.inner.head_object(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.note(format!(
            "list_objects_v2 {}",
            req.input.prefix.as_deref().unwrap_or("")
        ));
        self.inner.list_objects_v2(req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.note("list_objects".to_string());
        self.inner.list_objects(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.note("head_bucket".to_string());
        self.inner.head_bucket(req).await
    }
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.note("list_buckets".to_string());
        self.inner.list_buckets(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.note("get_bucket_location".to_string());
        self.inner.get_bucket_location(req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.note("list_parts".to_string());
        self.inner.list_parts(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.note("create_multipart_upload".to_string());
        self.inner.create_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.note("upload_part".to_string());
        self.inner.upload_part(req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.note("upload_part_copy".to_string());
        self.inner.upload_part_copy(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.note("abort_multipart_upload".to_string());
        self.inner.abort_multipart_upload(req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.note("put_object".to_string());
        let _one_at_a_time = self.writes.lock().await;
        self.inner.put_object(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.note("complete_multipart_upload".to_string());
        let _one_at_a_time = self.writes.lock().await;
        self.inner.complete_multipart_upload(req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.note("copy_object".to_string());
        let _one_at_a_time = self.writes.lock().await;
        self.inner.copy_object(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.note("delete_object".to_string());
        let _one_at_a_time = self.writes.lock().await;
        self.inner.delete_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.note("delete_objects".to_string());
        let _one_at_a_time = self.writes.lock().await;
        self.inner.delete_objects(req).await
    }
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.note("create_bucket".to_string());
        let _one_at_a_time = self.writes.lock().await;
        self.inner.create_bucket(req).await
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.note("delete_bucket".to_string());
        let _one_at_a_time = self.writes.lock().await;
        self.inner.delete_bucket(req).await
    }
}

/// The server, for as long as the value lives. Objects of `BUCKET` are the files under
/// `bucket_dir()`.
pub struct S3Server {
    pub addr: SocketAddr,
    root: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    log: RequestLog,
}

impl S3Server {
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let log = RequestLog::default();
        let fs = AtomicFs {
            inner: s3s_fs::FileSystem::new(root).expect("s3s-fs root"),
            writes: Mutex::new(()),
            log: log.clone(),
        };
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            addr,
            root: root.to_path_buf(),
            runtime: Some(runtime),
            log,
        }
    }

    /// The requests served since the last call (operation, or `list_objects_v2 <prefix>`).
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The folder holding the bucket's objects.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.join(BUCKET)
    }

    /// `[lake] options` for a project pointing at this server (credentials come from the
    /// environment, see `env`).
    pub fn lake_options(&self) -> String {
        format!(
            "{{ aws_endpoint = \"{}\", aws_allow_http = \"true\", aws_region = \"us-east-1\" }}",
            self.endpoint()
        )
    }

    /// The environment a child process needs for this server.
    pub fn env(&self) -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
