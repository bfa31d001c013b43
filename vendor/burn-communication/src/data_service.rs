//! This module enables direct data transfer between servers without blocking the client or any server.
//!
//! It eliminates the need for intermediate data transfer through the client, avoiding the process of downloading data from one server and reuploading it to another.
//!
//! The module provides an optimized mechanism for servers to communicate directly, streamlining data movement between them without involving the client.

use crate::Message;
use crate::base::Protocol;
use crate::base::{Address, CommunicationChannel, ProtocolClient, ProtocolServer};
use burn_tensor::{TensorData, backend::Backend};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, marker::PhantomData, sync::Arc};
use tokio::sync::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorTransferId(u64);

impl From<u64> for TensorTransferId {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

impl TensorTransferId {
    pub fn next(&mut self) {
        self.0 += 1;
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum DataServiceMessage {
    TensorRequest(TensorTransferId),
    Tensor(TensorData),
}

type ClientChannelRef<C> = Arc<Mutex<<C as ProtocolClient>::Channel>>;

pub struct TensorDataService<B: Backend, P: Protocol<Client: ProtocolClient>> {
    /// Maps tensor transfer IDs to their exposed state.
    pub exposed_tensors: Mutex<HashMap<TensorTransferId, TensorExposeState>>,
    /// Maps node addresses to their channels.
    pub channels: Mutex<HashMap<Address, ClientChannelRef<P::Client>>>,
    /// Notify when a new tensor is exposed.
    pub new_tensor_notify: Arc<Notify>,

    cancel_token: CancellationToken,

    _phantom_data: PhantomData<B>,
}

pub struct TensorExposeState {
    /// The bytes of the tensor data message. Message::Data(...) serialized with rmp_serde
    pub bytes: bytes::Bytes,
    /// How many times the tensor will be downloaded
    pub max_downloads: u32,
    /// How man times the tensor has been downloaded
    pub cur_download_count: u32,
}

/// Provides a routing function for a tensor data service for a communications server
pub trait TensorDataServer<B: Backend, P: Protocol> {
    /// Routes the tensor data service to the "/data" route
    fn route_tensor_data_service(self, state: Arc<TensorDataService<B, P>>) -> Self;
}

impl<B: Backend, S: ProtocolServer + Sized, P: Protocol<Server = S> + 'static>
    TensorDataServer<B, P> for S
{
    fn route_tensor_data_service(self, state: Arc<TensorDataService<B, P>>) -> Self {
        self.route("/data", async move |stream: S::Channel| {
            state.handle_data_channel(stream).await;
        })
    }
}

impl<B: Backend, P: Protocol> TensorDataService<B, P> {
    pub fn new(cancel_token: CancellationToken) -> Self {
        Self {
            exposed_tensors: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            new_tensor_notify: Arc::new(Notify::new()),
            cancel_token,
            _phantom_data: PhantomData::<B>,
        }
    }

    /// Exposes a tensor to the data server, allowing it to be downloaded by other nodes.
    pub async fn expose(
        &self,
        tensor: B::FloatTensorPrimitive,
        max_downloads: u32,
        transfer_id: TensorTransferId,
    ) {
        let data = B::float_into_data(tensor).await.unwrap();
        self.expose_data(data, max_downloads, transfer_id).await
    }

    /// Exposes a tensor data to the data server, allowing it to be downloaded by other nodes.
    pub async fn expose_data(
        &self,
        tensor_data: TensorData,
        max_downloads: u32,
        transfer_id: TensorTransferId,
    ) {
        let bytes: bytes::Bytes = rmp_serde::to_vec(&DataServiceMessage::Tensor(tensor_data))
            .unwrap()
            .into();
        let mut exposed_tensors = self.exposed_tensors.lock().await;
        exposed_tensors.insert(
            transfer_id,
            TensorExposeState {
                bytes,
                max_downloads,
                cur_download_count: 0,
            },
        );
        core::mem::drop(exposed_tensors);
        self.new_tensor_notify.notify_waiters();
    }

    pub async fn close(&self) {
        // Send a closing message to every open WebSocket stream

        let mut streams = self.channels.lock().await;
        for (_, stream) in streams.drain() {
            let mut stream = stream.lock().await;

            // A peer that is gone already is closed enough.
            if let Err(err) = stream.close().await {
                log::warn!("Failed to close a WebSocket stream: {err:?}");
            }
        }
    }

    /// Downloads a tensor that is exposed on another server. Requires a Tokio 1.x runtime
    ///
    /// Returns None if the peer cannot be reached, closes the connection or answers with
    /// something that is not a tensor.
    pub async fn download_tensor(
        &self,
        remote: Address,
        transfer_id: TensorTransferId,
    ) -> Option<TensorData> {
        log::info!("Downloading tensor from {remote:?}");

        let shared = self.get_data_stream(remote.clone()).await?;
        let mut stream = shared.lock().await;

        // Send the download request with the download id
        let bytes: bytes::Bytes =
            rmp_serde::to_vec(&DataServiceMessage::TensorRequest(transfer_id))
                .unwrap()
                .into();
        let data = if let Err(err) = stream.send(Message::new(bytes)).await {
            log::warn!("Failed to send a download request to {remote:?}: {err:?}");
            None
        } else {
            match stream.recv().await {
                Ok(Some(msg)) => match rmp_serde::from_slice(&msg.data) {
                    Ok(DataServiceMessage::Tensor(data)) => Some(data),
                    Ok(DataServiceMessage::TensorRequest(_)) => {
                        log::warn!("{remote:?} answered a download request with a request");
                        None
                    }
                    Err(err) => {
                        log::warn!("{remote:?} answered a download request with garbage: {err:?}");
                        None
                    }
                },
                Ok(None) => {
                    log::warn!("{remote:?} closed the connection");
                    None
                }
                Err(err) => {
                    log::warn!("The connection to {remote:?} failed: {err:?}");
                    None
                }
            }
        };
        core::mem::drop(stream);
        if data.is_none() {
            self.forget_data_stream(&remote, &shared).await;
        }
        data
    }

    /// Removes `stream` from the open streams, so that the next download from `address`
    /// connects afresh instead of failing on a stream that is closed or out of step. A stream
    /// opened since for the same address is kept.
    async fn forget_data_stream(
        &self,
        address: &Address,
        stream: &ClientChannelRef<P::Client>,
    ) {
        let mut streams = self.channels.lock().await;
        if streams
            .get(address)
            .is_some_and(|kept| Arc::ptr_eq(kept, stream))
        {
            streams.remove(address);
        }
    }

    /// Get the WebSocket stream for the given address, or create a new one if it doesn't exist.
    /// None if no connection can be made.
    async fn get_data_stream(
        &self,
        address: Address,
    ) -> Option<ClientChannelRef<P::Client>> {
        let mut streams = self.channels.lock().await;
        match streams.get(&address) {
            Some(stream) => Some(stream.clone()),
            None => {
                // Open a new WebSocket connection to the address
                let Some(stream) = P::Client::connect(address.clone(), "data").await else {
                    log::warn!("Failed to connect to data server at {address:?}");
                    return None;
                };

                let stream = Arc::new(Mutex::new(stream));
                streams.insert(address.clone(), stream.clone());

                Some(stream)
            }
        }
    }

    /// Get the requested exposed tensor data, and update download counter
    async fn get_exposed_tensor_bytes(
        &self,
        transfer_id: TensorTransferId,
    ) -> Option<bytes::Bytes> {
        loop {
            // Registered before the map is read: `notify_waiters` wakes only futures that
            // already wait, so a tensor exposed between the check and the wait would otherwise
            // never wake this download (both nodes then wait for each other forever).
            let notified = self.new_tensor_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut exposed_tensors = self.exposed_tensors.lock().await;
                // take the tensor out of the hashmap while we download
                if let Some(mut exposed_state) = exposed_tensors.remove(&transfer_id) {
                    exposed_state.cur_download_count += 1;
                    let bytes = if exposed_state.cur_download_count == exposed_state.max_downloads {
                        exposed_state.bytes
                    } else {
                        let bytes = exposed_state.bytes.clone();
                        exposed_tensors.insert(transfer_id, exposed_state);
                        bytes
                    };
                    return Some(bytes);
                }
            }
            // No matching tensor, wait for a new one to come in.
            notified.await;
        }
    }

    /// Handle incoming connections for downloading tensors.
    pub(crate) async fn handle_data_channel(
        &self,
        mut channel: <P::Server as ProtocolServer>::Channel,
    ) {
        log::info!("[Data Handler] New connection for download.");

        // Whatever a client does wrong (goes away, sends garbage) ends its connection only:
        // this service serves every other client on.
        while !self.cancel_token.is_cancelled() {
            let bytes = match channel.recv().await {
                Ok(Some(msg)) => msg.data,
                Ok(None) => {
                    log::info!("Closed connection");
                    return;
                }
                Err(err) => {
                    log::warn!("Failed to receive message from websocket: {err:?}");
                    return;
                }
            };
            let Ok(DataServiceMessage::TensorRequest(transfer_id)) = rmp_serde::from_slice(&bytes)
            else {
                log::warn!("Received a message that wasn't a tensor request; closing the connection");
                return;
            };
            let Some(bytes) = self.get_exposed_tensor_bytes(transfer_id).await else {
                return;
            };
            if let Err(err) = channel.send(Message::new(bytes)).await {
                log::warn!("Failed to send a tensor: {err:?}");
                return;
            }
        }
        log::info!("[Data Service] Closing connection for download.");
    }
}
