//! `#[derive(Params)]`: makes a struct of tensors (and of other `Params`)
//! usable as the parameters of `wgrad::grad`. Fields marked
//! `#[params(skip)]` are not differentiated; they are cloned when the
//! structure is rebuilt (so they must be `Clone`).

use proc_macro::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, Index, parse_macro_input};

/// Derives `wgrad::Params` for a struct whose fields are `Params`.
#[proc_macro_derive(Params, attributes(params))]
pub fn derive_params(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn skipped(field: &syn::Field) -> syn::Result<bool> {
    let mut skip = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("params")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(meta.error("expected `skip`"))
            }
        })?;
    }
    Ok(skip)
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(name, "#[derive(Params)] supports structs only"));
    };
    let mut visits = Vec::new();
    let mut named = Vec::new();
    let mut rebuilds = Vec::new();
    let mut bounds = Vec::new();
    for (i, field) in data.fields.iter().enumerate() {
        let member = match &field.ident {
            Some(id) => quote!(#id),
            None => {
                let idx = Index::from(i);
                quote!(#idx)
            }
        };
        if skipped(field)? {
            rebuilds.push((member.clone(), quote!(::core::clone::Clone::clone(&self.#member))));
        } else {
            let ty = &field.ty;
            bounds.push(quote!(#ty: ::wgrad::Params));
            visits.push(quote!(::wgrad::Params::visit(&self.#member, f);));
            let label = match &field.ident {
                Some(id) => id.to_string(),
                None => i.to_string(),
            };
            named.push(quote!(::wgrad::Params::visit_named(&self.#member, &::wgrad::params_path(prefix, #label), f);));
            rebuilds.push((member.clone(), quote!(::wgrad::Params::rebuild(&self.#member, it))));
        }
    }
    let construct = match &data.fields {
        Fields::Named(_) => {
            let parts = rebuilds.iter().map(|(m, e)| quote!(#m: #e));
            quote!(Self { #(#parts),* })
        }
        Fields::Unnamed(_) => {
            let parts = rebuilds.iter().map(|(_, e)| e);
            quote!(Self(#(#parts),*))
        }
        Fields::Unit => quote!(Self),
    };
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut predicates: Vec<proc_macro2::TokenStream> =
        where_clause.map(|w| w.predicates.iter().map(|p| quote!(#p)).collect()).unwrap_or_default();
    if !input.generics.params.is_empty() {
        predicates.extend(bounds);
    }
    Ok(quote! {
        impl #impl_generics ::wgrad::Params for #name #ty_generics where #(#predicates),* {
            fn visit<'wgrad_a>(&'wgrad_a self, f: &mut dyn FnMut(&'wgrad_a ::wgrad::Tensor)) {
                #(#visits)*
            }
            fn visit_named<'wgrad_a>(&'wgrad_a self, prefix: &str, f: &mut dyn FnMut(::std::string::String, &'wgrad_a ::wgrad::Tensor)) {
                #(#named)*
            }
            fn rebuild(&self, it: &mut dyn Iterator<Item = ::wgrad::Tensor>) -> Self {
                #construct
            }
        }
    })
}
