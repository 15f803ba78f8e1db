use kuberator::Operator;

#[derive(Operator)]
#[kuberator(finalizer = "configmaps.example.com/cleanup")]
struct MyOperator;

fn main() {
    // The stub keeps this line free of a second error.
    let _ = MyOperator.run();
}
