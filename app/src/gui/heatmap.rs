//! Overlays drawn by our WGSL shader (`shaders/heatmap.wgsl`) through egui_wgpu paint callbacks:
//! a feature-grid heatmap through a colormap, a PCA RGB map, or a label map, upsampled on the GPU
//! (nearest or bilinear) over the image that egui has drawn underneath.
//!
//! The pipeline, the lookup table (the engine's matplotlib colormap tables and the label palette,
//! one 256-texel row each) and one texture per overlay slot live in the renderer's
//! `callback_resources`; a texture is uploaded again only when its data changes.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use eframe::egui;
use eframe::egui_wgpu::{self, wgpu};

use super::colormap::{lookup_table, Colormap, LUT_ROWS, LUT_WIDTH, PALETTE_ROW};

/// The values of an overlay at feature resolution, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum OverlayValues {
    /// One value per cell, mapped through a colormap over a range.
    Scalar(Vec<f32>),
    /// `[h, w, 3]` colours in [0, 1].
    Rgb(Vec<f32>),
    /// One label per cell, drawn with the palette.
    Labels(Vec<u32>),
}

/// An overlay's data; `id` changes whenever the values do (it keys the GPU upload).
#[derive(Debug)]
pub struct OverlayData {
    pub id: u64,
    pub width: u32,
    pub height: u32,
    pub values: OverlayValues,
}

impl OverlayData {
    pub fn new(width: usize, height: usize, values: OverlayValues) -> Arc<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Arc::new(Self {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            width: width as u32,
            height: height as u32,
            values,
        })
    }

    /// RGBA32F texels.
    fn texels(&self) -> Vec<u8> {
        let cells = (self.width * self.height) as usize;
        let mut out = Vec::with_capacity(cells * 16);
        let mut push = |rgba: [f32; 4]| {
            for v in rgba {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        match &self.values {
            OverlayValues::Scalar(v) => {
                (0..cells).for_each(|i| push([v.get(i).copied().unwrap_or(0.0), 0.0, 0.0, 1.0]))
            }
            OverlayValues::Rgb(v) => (0..cells).for_each(|i| {
                let c = |k: usize| v.get(i * 3 + k).copied().unwrap_or(0.0);
                push([c(0), c(1), c(2), 1.0])
            }),
            OverlayValues::Labels(v) => (0..cells)
                .for_each(|i| push([v.get(i).copied().unwrap_or(0) as f32, 0.0, 0.0, 1.0])),
        }
        out
    }
}

/// How an overlay is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverlayStyle {
    pub colormap: Colormap,
    pub opacity: f32,
    pub lo: f32,
    pub hi: f32,
    pub bilinear: bool,
}

/// One overlay drawn into a rectangle. `slot` names its GPU texture (one per image card).
pub struct OverlayCallback {
    pub slot: usize,
    pub data: Arc<OverlayData>,
    pub style: OverlayStyle,
}

impl OverlayCallback {
    pub fn paint(self, painter: &egui::Painter, rect: egui::Rect) {
        painter.add(egui_wgpu::Callback::new_paint_callback(rect, self));
    }
}

struct SlotGpu {
    data_id: u64,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

/// The GPU objects, kept in the renderer's `callback_resources`.
pub struct OverlayRenderer {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    lut_view: wgpu::TextureView,
    srgb_target: bool,
    slots: HashMap<usize, SlotGpu>,
}

const UNIFORM_BYTES: u64 = 48;

impl OverlayRenderer {
    /// Create the pipeline for the app's render target and register it with the renderer.
    pub fn install(render_state: &egui_wgpu::RenderState) {
        let renderer = Self::new(
            &render_state.device,
            &render_state.queue,
            render_state.target_format,
        );
        render_state
            .renderer
            .write()
            .callback_resources
            .insert(renderer);
    }

    fn new(device: &wgpu::Device, queue: &wgpu::Queue, format: wgpu::TextureFormat) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("diffscope overlay"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../../shaders/heatmap.wgsl").into()),
        });
        let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("diffscope overlay"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new(UNIFORM_BYTES),
                    },
                    count: None,
                },
                texture_entry(1),
                texture_entry(2),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("diffscope overlay"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("diffscope overlay"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format,
                    blend: Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        let lut = create_texture(
            device,
            queue,
            "diffscope colormaps",
            (LUT_WIDTH, LUT_ROWS),
            wgpu::TextureFormat::Rgba8Unorm,
            &lookup_table(),
            4,
        );
        Self {
            pipeline,
            layout,
            lut_view: lut.create_view(&Default::default()),
            srgb_target: format.is_srgb(),
            slots: HashMap::new(),
        }
    }

    fn prepare_slot(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        slot: usize,
        data: &OverlayData,
    ) {
        if self.slots.get(&slot).is_some_and(|s| s.data_id == data.id) {
            return;
        }
        let texture = create_texture(
            device,
            queue,
            "diffscope overlay values",
            (data.width.max(1), data.height.max(1)),
            wgpu::TextureFormat::Rgba32Float,
            &data.texels(),
            16,
        );
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("diffscope overlay params"),
            size: UNIFORM_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let view = texture.create_view(&Default::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("diffscope overlay"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniforms.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&self.lut_view),
                },
            ],
        });
        self.slots.insert(
            slot,
            SlotGpu {
                data_id: data.id,
                uniforms,
                bind_group,
            },
        );
    }
}

fn create_texture(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    (width, height): (u32, u32),
    format: wgpu::TextureFormat,
    bytes: &[u8],
    bytes_per_texel: u32,
) -> wgpu::Texture {
    let size = wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 1,
    };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let expected = (width * height * bytes_per_texel) as usize;
    let mut padded;
    let data = if bytes.len() >= expected {
        &bytes[..expected]
    } else {
        padded = bytes.to_vec();
        padded.resize(expected, 0);
        &padded[..]
    };
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: &texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        data,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(width * bytes_per_texel),
            rows_per_image: Some(height),
        },
        size,
    );
    texture
}

fn uniform_bytes(data: &OverlayData, style: &OverlayStyle, srgb_target: bool) -> Vec<u8> {
    let mode: u32 = match data.values {
        OverlayValues::Scalar(_) => 0,
        OverlayValues::Rgb(_) => 1,
        OverlayValues::Labels(_) => 2,
    };
    let words: [u32; 12] = [
        data.width.max(1),
        data.height.max(1),
        mode,
        style.colormap.row(),
        style.lo.to_bits(),
        style.hi.to_bits(),
        style.opacity.clamp(0.0, 1.0).to_bits(),
        u32::from(style.bilinear),
        u32::from(srgb_target),
        PALETTE_ROW,
        0,
        0,
    ];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

impl egui_wgpu::CallbackTrait for OverlayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen_descriptor: &egui_wgpu::ScreenDescriptor,
        _egui_encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(renderer) = resources.get_mut::<OverlayRenderer>() {
            renderer.prepare_slot(device, queue, self.slot, &self.data);
            if let Some(slot) = renderer.slots.get(&self.slot) {
                queue.write_buffer(
                    &slot.uniforms,
                    0,
                    &uniform_bytes(&self.data, &self.style, renderer.srgb_target),
                );
            }
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(renderer) = resources.get::<OverlayRenderer>() else {
            return;
        };
        let Some(slot) = renderer.slots.get(&self.slot) else {
            return;
        };
        render_pass.set_pipeline(&renderer.pipeline);
        render_pass.set_bind_group(0, &slot.bind_group, &[]);
        render_pass.draw(0..6, 0..1);
    }
}
