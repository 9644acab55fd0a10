use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, s};
use rayon::prelude::*;
use std::time::Instant;

fn fref<'a>(a: ArrayView2<'a, f32>) -> faer::MatRef<'a, f32> {
    let (r, c) = a.dim();
    let st = a.strides();
    if st[1] == 1 { let rs = st[0] as usize; let len = if r == 0 {0} else {(r-1)*rs + c}; let p = a.as_ptr(); return faer::MatRef::from_row_major_slice_with_stride(unsafe{std::slice::from_raw_parts(p, len)}, r, c, rs); }
    let t = a.reversed_axes(); fref(t).transpose()
}
fn fmut<'a>(a: ArrayViewMut2<'a, f32>) -> faer::MatMut<'a, f32> {
    let (r, c) = a.dim();
    let st = a.strides().to_vec();
    if st[1] == 1 { let rs = st[0] as usize; let len = if r == 0 {0} else {(r-1)*rs + c}; let p = a.as_ptr() as *mut f32; return faer::MatMut::from_column_major_slice_with_stride_mut(unsafe{std::slice::from_raw_parts_mut(p, len)}, c, r, rs).transpose_mut(); }
    fmut(a.reversed_axes()).transpose_mut()
}
fn mm(c: ArrayViewMut2<f32>, a: ArrayView2<f32>, b: ArrayView2<f32>, par: faer::Par) {
    if std::env::var("DBG").is_ok() { eprintln!("c {:?} {:?} a {:?} {:?} b {:?} {:?}", c.dim(), c.strides(), a.dim(), a.strides(), b.dim(), b.strides()); let fa = fref(a.clone()); let fb = fref(b.clone()); eprintln!("fa {:?} {:?} {:?} fb {:?} {:?} {:?}", fa.nrows(), fa.row_stride(), fa.col_stride(), fb.nrows(), fb.row_stride(), fb.col_stride()); }
    faer::linalg::matmul::matmul(fmut(c), faer::Accum::Replace, fref(a), fref(b), 1.0f32, par);
}
fn time<F: FnMut()>(name: &str, reps: usize, mut f: F) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps { f(); }
    let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    println!("{name:50} {ms:8.2} ms");
    ms
}
fn main() {
    let (m, n, h) = (1348usize, 49152usize, 20usize);
    let x = Array2::from_shape_fn((m, n), |(i, j)| ((i * 7 + j * 13) % 255) as f32 / 255.0);
    let w = Array2::from_shape_fn((h, n), |(i, j)| (((i * 31 + j * 17) % 97) as f32 - 48.0) / 1000.0);
    let dz = Array2::from_shape_fn((m, h), |(i, j)| (((i * 3 + j * 5) % 11) as f32 - 5.0) / 100.0);
    let dzt = dz.t().as_standard_layout().to_owned();
    let mut z = Array2::<f32>::zeros((m, h));
    let mut zt = Array2::<f32>::zeros((h, m));
    let mut dw = Array2::<f32>::zeros((h, n));
    let mut dwt = Array2::<f32>::zeros((n, h));
    let par = faer::Par::rayon(2);
    if std::env::var("SKIP1").is_err() { time("fwd Z=X·Wᵀ (Z row)", 5, || mm(z.view_mut(), x.view(), w.t(), par)); }
    time("fwd Zᵀ=W·Xᵀ (Zᵀ row)", 5, || mm(zt.view_mut(), w.view(), x.t(), par));
    time("fwd split rows seq", 5, || {
        z.axis_chunks_iter_mut(Axis(0), m.div_ceil(2)).into_par_iter().zip(x.axis_chunks_iter(Axis(0), m.div_ceil(2)).into_par_iter())
          .for_each(|(zc, xc)| mm(zc, xc, w.t(), faer::Par::Seq));
    });
    for chunk in [32usize, 64, 128, 337, 674] {
    time(&format!("fwd split rows seq chunk {chunk}"), 5, || {
        z.axis_chunks_iter_mut(Axis(0), chunk).into_par_iter().zip(x.axis_chunks_iter(Axis(0), chunk).into_par_iter())
          .for_each(|(zc, xc)| mm(zc, xc, w.t(), faer::Par::Seq));
    });
    }
    time("dW=dZᵀ·X (dW row)", 5, || mm(dw.view_mut(), dz.t(), x.view(), par));
    time("dW=dZᵀ·X dzt contiguous", 5, || mm(dw.view_mut(), dzt.view(), x.view(), par));
    time("dWᵀ=Xᵀ·dZ (dWᵀ row)", 5, || mm(dwt.view_mut(), x.t(), dz.view(), par));
    for chunk in [1024usize, 4096, 24576] {
    time(&format!("dW split cols seq chunk {chunk}"), 5, || {
        dw.axis_chunks_iter_mut(Axis(1), chunk).into_par_iter().zip(x.axis_chunks_iter(Axis(1), chunk).into_par_iter())
          .for_each(|(dwc, xc)| mm(dwc, dzt.view(), xc, faer::Par::Seq));
    });
    }
    let _ = s![.., ..];
}
