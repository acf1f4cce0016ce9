// diffscope's overlay shader: draws a small float texture (a feature-grid heatmap, a PCA RGB map,
// or a label map) over an image, upsampled here with nearest or bilinear sampling.
//
// Sampling follows the engine's coordinate convention (PyTorch's align_corners=False): texel
// centres sit at (i + 0.5) / n, positions before the first centre take the first value. Bilinear
// interpolates the values (the similarity, the PCA colour) and only then maps them to colours,
// as upsampling the similarity (not the colours) is what the analysis means. Labels interpolate
// their palette colours, so segment borders are smooth but never show a label in between.

struct Params {
    size: vec2<u32>,
    // 0: scalar through a colormap, 1: RGB in [0, 1], 2: integer labels through the palette.
    mode: u32,
    // Row of the lookup texture holding the colormap's 256 entries (the engine's `Colormap::row`).
    colormap: u32,
    lo: f32,
    hi: f32,
    opacity: f32,
    bilinear: u32,
    // 1 when the render target is an sRGB format (colours must then be written linear).
    srgb_target: u32,
    // Row of the lookup texture holding the label palette.
    palette_row: u32,
    _pad1: u32,
    _pad2: u32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var data: texture_2d<f32>;
@group(0) @binding(2) var lut: texture_2d<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// Two triangles covering the viewport, which egui sets to the callback's rectangle.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0),
        vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), vec2<f32>(1.0, 1.0),
    );
    let c = corners[index];
    var out: VertexOut;
    out.position = vec4<f32>(c.x * 2.0 - 1.0, 1.0 - c.y * 2.0, 0.0, 1.0);
    out.uv = c;
    return out;
}

fn texel(p: vec2<i32>) -> vec4<f32> {
    let last = vec2<i32>(params.size) - vec2<i32>(1, 1);
    return textureLoad(data, clamp(p, vec2<i32>(0, 0), last), 0);
}

// Entry floor(u * 256) of a colormap's 256 entries, 1 taking the last: matplotlib's lookup, so
// the workbench shows the colours a matplotlib figure of the same values has.
fn lookup(row: i32, u: f32) -> vec3<f32> {
    let i = min(i32(floor(clamp(u, 0.0, 1.0) * 256.0)), 255);
    return textureLoad(lut, vec2<i32>(i, row), 0).rgb;
}

fn label_colour(v: f32) -> vec3<f32> {
    let label = clamp(i32(round(v)), 0, 255);
    return textureLoad(lut, vec2<i32>(label, i32(params.palette_row)), 0).rgb;
}

fn value_colour(v: vec4<f32>) -> vec3<f32> {
    if params.mode == 0u {
        let span = params.hi - params.lo;
        var u = 0.5;
        if span > 0.0 {
            u = (v.r - params.lo) / span;
        }
        return lookup(i32(params.colormap), u);
    }
    return clamp(v.rgb, vec3<f32>(0.0), vec3<f32>(1.0));
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let low = c / 12.92;
    let high = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(high, low, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let n = vec2<f32>(params.size);
    var colour: vec3<f32>;
    if params.bilinear == 0u {
        let p = vec2<i32>(floor(in.uv * n));
        let v = texel(p);
        if params.mode == 2u {
            colour = label_colour(v.r);
        } else {
            colour = value_colour(v);
        }
    } else {
        // Grid coordinates with integer values at texel centres, clamped like align_corners=False.
        let g = clamp(in.uv * n - 0.5, vec2<f32>(0.0), n - 1.0);
        let p0 = vec2<i32>(floor(g));
        let f = g - floor(g);
        let a = texel(p0);
        let b = texel(p0 + vec2<i32>(1, 0));
        let c = texel(p0 + vec2<i32>(0, 1));
        let d = texel(p0 + vec2<i32>(1, 1));
        if params.mode == 2u {
            let top = mix(label_colour(a.r), label_colour(b.r), f.x);
            let bottom = mix(label_colour(c.r), label_colour(d.r), f.x);
            colour = mix(top, bottom, f.y);
        } else {
            colour = value_colour(mix(mix(a, b, f.x), mix(c, d, f.x), f.y));
        }
    }
    if params.srgb_target == 1u {
        colour = srgb_to_linear(colour);
    }
    // Premultiplied alpha, as egui blends.
    return vec4<f32>(colour * params.opacity, params.opacity);
}
