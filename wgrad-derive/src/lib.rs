//! `#[derive(Params)]`: makes a struct of tensors (and of other `Params`)
//! usable as the parameters of `wgrad::grad`. Fields marked
//! `#[params(skip)]` are not differentiated; they are cloned when the
//! structure is rebuilt (so they must be `Clone`).
//!
//! It also generates `{Name}Of<Q>`: the struct's fields with a `Q` in place
//! of each tensor (the struct's `Params::Of<Q>`), which Jacobians and
//! Hessians with respect to the struct are shaped as.

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
    let of_name = quote::format_ident!("{}Of", name);
    let vis = &input.vis;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(name, "#[derive(Params)] supports structs only"));
    };
    let mut visits = Vec::new();
    let mut named = Vec::new();
    let mut rebuilds = Vec::new();
    let mut bounds = Vec::new();
    // the companion `{Name}Of<Q>`: field types, its constructor from `nest`,
    // and its own visits and rebuilds
    let mut of_fields = Vec::new();
    let mut nests = Vec::new();
    for (i, field) in data.fields.iter().enumerate() {
        let member = match &field.ident {
            Some(id) => quote!(#id),
            None => {
                let idx = Index::from(i);
                quote!(#idx)
            }
        };
        let vis = &field.vis;
        let ident = field.ident.as_ref().map(|id| quote!(#id:));
        if skipped(field)? {
            rebuilds.push((member.clone(), quote!(::core::clone::Clone::clone(&self.#member))));
            let ty = &field.ty;
            of_fields.push(quote!(#vis #ident #ty));
            nests.push((member.clone(), quote!(::core::clone::Clone::clone(&self.#member))));
        } else {
            let ty = &field.ty;
            of_fields.push(quote!(#vis #ident <#ty as ::wgrad::Params>::Of<WgradQ>));
            nests.push((member.clone(), quote!(::wgrad::Params::nest(&self.#member, it))));
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
    let of_construct = |parts: &[(proc_macro2::TokenStream, proc_macro2::TokenStream)]| match &data.fields {
        Fields::Named(_) => {
            let parts = parts.iter().map(|(m, e)| quote!(#m: #e));
            quote!(#of_name { #(#parts,)* _leaf: ::core::marker::PhantomData })
        }
        _ => {
            let parts = parts.iter().map(|(_, e)| e);
            quote!(#of_name(#(#parts,)* ::core::marker::PhantomData))
        }
    };
    let of_nest = of_construct(&nests);
    let of_rebuild = of_construct(&rebuilds);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut predicates: Vec<proc_macro2::TokenStream> =
        where_clause.map(|w| w.predicates.iter().map(|p| quote!(#p)).collect()).unwrap_or_default();
    if !input.generics.params.is_empty() {
        predicates.extend(bounds);
    }
    // the companion's generics: the struct's, then the leaf type
    let params = &input.generics.params;
    let of_params =
        if params.is_empty() { quote!(WgradQ: ::wgrad::Params) } else { quote!(#params, WgradQ: ::wgrad::Params) };
    let args: Vec<proc_macro2::TokenStream> = input
        .generics
        .params
        .iter()
        .map(|p| match p {
            syn::GenericParam::Type(t) => {
                let id = &t.ident;
                quote!(#id)
            }
            syn::GenericParam::Lifetime(l) => {
                let l = &l.lifetime;
                quote!(#l)
            }
            syn::GenericParam::Const(c) => {
                let id = &c.ident;
                quote!(#id)
            }
        })
        .collect();
    let of_ty = |leaf: proc_macro2::TokenStream| quote!(#of_name<#(#args,)* #leaf>);
    let of_self = of_ty(quote!(WgradQ));
    let doc = format!(
        "The fields of [`{name}`] with a `WgradQ` in place of each tensor: `<{name} as Params>::Of<WgradQ>`, \
         the shape of a Jacobian or Hessian with respect to a `{name}` (made by `#[derive(Params)]`)."
    );
    let of_struct = match &data.fields {
        Fields::Named(_) => quote! {
            #[doc = #doc]
            #vis struct #of_name<#of_params> where #(#predicates),* {
                #(#of_fields,)*
                #[doc(hidden)]
                pub _leaf: ::core::marker::PhantomData<fn() -> WgradQ>,
            }
        },
        _ => quote! {
            #[doc = #doc]
            #vis struct #of_name<#of_params>(#(#of_fields,)* #[doc(hidden)] pub ::core::marker::PhantomData<fn() -> WgradQ>)
                where #(#predicates),*;
        },
    };
    Ok(quote! {
        #of_struct

        impl<#of_params> ::wgrad::Params for #of_self where #(#predicates),* {
            type Of<WgradR: ::wgrad::Params> = ::std::vec::Vec<WgradR>;
            fn nest<WgradR: ::wgrad::Params>(&self, it: &mut dyn Iterator<Item = WgradR>) -> ::std::vec::Vec<WgradR> {
                ::wgrad::params_nest_flat(self, it)
            }
            fn visit<'wgrad_a>(&'wgrad_a self, f: &mut dyn FnMut(&'wgrad_a ::wgrad::Tensor)) {
                #(#visits)*
            }
            fn visit_named<'wgrad_a>(&'wgrad_a self, prefix: &str, f: &mut dyn FnMut(::std::string::String, &'wgrad_a ::wgrad::Tensor)) {
                #(#named)*
            }
            fn rebuild(&self, it: &mut dyn Iterator<Item = ::wgrad::Tensor>) -> Self {
                #of_rebuild
            }
        }

        impl #impl_generics ::wgrad::Params for #name #ty_generics where #(#predicates),* {
            type Of<WgradQ: ::wgrad::Params> = #of_self;
            fn nest<WgradQ: ::wgrad::Params>(&self, it: &mut dyn Iterator<Item = WgradQ>) -> Self::Of<WgradQ> {
                #of_nest
            }
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
