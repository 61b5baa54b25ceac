//! MLIR plumbing: contexts with the `max` dialect loaded, parsing with diagnostics, running
//! pass pipelines, printing and translating to LLVM IR.

use crate::error::CompileError;
use melior::ir::operation::{OperationLike, OperationPrintingFlags};
use melior::ir::{BlockLike, Module};
use melior::pass::PassManager;
use melior::{dialect::DialectRegistry, utility, Context};
use std::cell::RefCell;
use std::rc::Rc;

/// An MLIR context with every upstream dialect, the `max` dialect (IRDL) and LLVM
/// translations registered, collecting diagnostics as `file:line:col: error: message`.
///
/// A context is not `Send`: make one per compile thread.
pub struct MlirContext {
    pub context: Context,
    diagnostics: Rc<RefCell<Vec<String>>>,
}

impl MlirContext {
    /// Creates the context and loads the `max` dialect.
    pub fn new() -> Result<MlirContext, CompileError> {
        // Registering passes twice double-frees inside MLIR; melior guards it with a Once.
        utility::register_all_passes();
        let registry = DialectRegistry::new();
        utility::register_all_dialects(&registry);
        let context = Context::new();
        context.append_dialect_registry(&registry);
        context.load_all_available_dialects();
        utility::register_all_llvm_translations(&context);
        // Compiles are single-threaded per context; MLIR's own pool would oversubscribe.
        context.enable_multi_threading(false);
        let diagnostics: Rc<RefCell<Vec<String>>> = Rc::default();
        let sink = diagnostics.clone();
        context.attach_diagnostic_handler(move |d| {
            let loc = max_dialects::Location::from_mlir(&d.location().to_string());
            let sev = match d.severity() {
                melior::diagnostic::DiagnosticSeverity::Error => "error",
                melior::diagnostic::DiagnosticSeverity::Warning => "warning",
                melior::diagnostic::DiagnosticSeverity::Note => "note",
                melior::diagnostic::DiagnosticSeverity::Remark => "remark",
            };
            sink.borrow_mut().push(format!("{loc}: {sev}: {d}"));
            true
        });
        let irdl = Module::parse(&context, max_dialects::IRDL).ok_or_else(|| CompileError::Internal("the max IRDL definition does not parse".into()))?;
        if !utility::load_irdl_dialects(&irdl) {
            return Err(CompileError::Internal("loading the max IRDL dialect failed".into()));
        }
        diagnostics.borrow_mut().clear();
        Ok(MlirContext { context, diagnostics })
    }

    /// Takes the diagnostics collected so far.
    pub fn take_diagnostics(&self) -> Vec<String> {
        std::mem::take(&mut *self.diagnostics.borrow_mut())
    }

    fn diag_error(&self, what: &str) -> CompileError {
        let d = self.take_diagnostics();
        if d.is_empty() {
            CompileError::Mlir(format!("{what} failed"))
        } else {
            CompileError::Mlir(d.join("\n"))
        }
    }

    /// Parses `source`, attributing locations to `file_name`, and verifies it.
    pub fn parse<'c>(&'c self, source: &str, file_name: &str) -> Result<Module<'c>, CompileError> {
        // SAFETY: plain C API call; the strings outlive it and the result is checked for null.
        let op = unsafe {
            mlir_sys::mlirOperationCreateParse(
                self.context.to_raw(),
                melior::StringRef::new(source).to_raw(),
                melior::StringRef::new(file_name).to_raw(),
            )
        };
        if op.ptr.is_null() {
            return Err(self.diag_error("parsing"));
        }
        // SAFETY: `op` is a freshly created, owned, non-null operation.
        let op = unsafe { melior::ir::Operation::from_raw(op) };
        let is_module = op.name().as_string_ref().as_str() == Ok("builtin.module");
        let module = if is_module {
            Module::from_operation(op).ok_or_else(|| CompileError::Internal("builtin.module did not convert".into()))?
        } else {
            // A file holding a single func.func: put it in a module, as mlir-opt does.
            let module = Module::new(melior::ir::Location::unknown(&self.context));
            module.body().append_operation(op);
            module
        };
        if !module.as_operation().verify() {
            return Err(self.diag_error("verification"));
        }
        Ok(module)
    }

    /// Runs a textual pass pipeline (`builtin.module(...)`) on `module`.
    pub fn run_pipeline(&self, module: &mut Module, pipeline: &str) -> Result<(), CompileError> {
        let pm = PassManager::new(&self.context);
        utility::parse_pass_pipeline(pm.as_operation_pass_manager(), pipeline)
            .map_err(|e| CompileError::Mlir(format!("bad pass pipeline '{pipeline}': {e}")))?;
        pm.run(module).map_err(|_| self.diag_error(&format!("pass pipeline {pipeline}")))
    }

    /// Translates an LLVM-dialect module to LLVM IR text.
    pub fn translate_to_llvm_ir(&self, module: &Module) -> Result<String, CompileError> {
        // SAFETY: the module is valid; the returned string is malloc'd and ours to free.
        unsafe {
            let p = mlir_sys::mlirTranslateModuleToLLVMIRToString(module.as_operation().to_raw());
            if p.is_null() {
                return Err(self.diag_error("translation to LLVM IR"));
            }
            let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
            free(p as *mut std::ffi::c_void);
            Ok(s)
        }
    }
}

unsafe extern "C" {
    fn free(p: *mut std::ffi::c_void);
}

/// Prints a module in MLIR's pretty form (with locations when `debug_info`).
pub fn print_module(module: &Module, debug_info: bool) -> String {
    if debug_info {
        let flags = OperationPrintingFlags::new().enable_debug_info(true, false);
        module.as_operation().to_string_with_flags(flags).unwrap_or_else(|_| module.as_operation().to_string())
    } else {
        module.as_operation().to_string()
    }
}
